"""onnx_bundle on a temporary instance: real raw_docs and cleaned_chunks, tiny trained checkpoints
published by stand-in assets, then export, blocking parity checks, catalog rows, lineage back to the
exact raw_docs version, verify, promotion, and refusals (wrong ONNX, failed upstream check)."""


import json
import shutil

import dagster as dg
import polars as pl
import pytest

from ml.export import to_onnx
from assets import cleaned_chunks, raw_docs
from assets.export import onnx_bundle
from ml.catalog import Catalog, now_utc
from ml.cli import main as lineage
from ml.store import ArtifactStore
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from tests.conftest import write_lines
from tests.helpers.export_models import TEXTS, build_checkpoints, build_graph_models, perturb_largest_weight
from tests.helpers.stand_ins import publishing_stand_in

RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}
CKPT: dict = {}  # stand-in asset -> directory to publish (filled by the fixture)
FAST = {"latency_runs": 1, "latency_batches": [1], "threads": 1, "samples": 8}


def _standin(name: str, deps: list[str]):
    """A test asset that publishes a prepared directory as a version, with real upstream versions."""

    def write(out, up):
        if name == "relation_dataset":
            pl.DataFrame({"text": [f"<e1>{t.split()[0]}</e1> {t} <e2>it</e2>" for t in TEXTS]}).write_parquet(out / "val.parquet")
        elif name == "ner_dataset":
            pl.DataFrame({"text": [s for t in TEXTS for s in t.split(". ")]}).write_parquet(out / "val.parquet")
        else:
            shutil.copytree(CKPT[name], out, dirs_exist_ok=True)

    return publishing_stand_in(name, deps, write)


STAND_INS = [
    _standin("lm_checkpoint", ["cleaned_chunks"]),
    _standin("lora_adapter", ["lm_checkpoint", "cleaned_chunks"]),
    _standin("embedding_checkpoint", ["cleaned_chunks"]),
    _standin("relation_dataset", ["cleaned_chunks"]),
    _standin("relation_checkpoint", ["relation_dataset"]),
    _standin("gnn_dataset", ["cleaned_chunks"]),
    _standin("gnn_checkpoint", ["gnn_dataset", "embedding_checkpoint"]),
    _standin("ner_dataset", ["cleaned_chunks"]),
    _standin("ner_checkpoint", ["ner_dataset"]),
    _standin("dpo_adapter", ["lora_adapter"]),  # merged weights in model/, like the real one
]
PARITY_OK = {"lm_parity": True, "embedding_parity": True, "relation_parity": True, "gnn_parity": True,
             "ner_parity": True, "dpo_parity": True, "lm_int4_parity": True, "dpo_int4_parity": True}
ALL = [raw_docs, cleaned_chunks, *STAND_INS, onnx_bundle]


@pytest.fixture
def checkpoints(tmp_path_factory):
    CKPT.update(build_checkpoints(tmp_path_factory.getbasetemp() / "checkpoints"))
    CKPT.update(build_graph_models(tmp_path_factory.getbasetemp() / "checkpoints", CKPT))
    CKPT["dpo_adapter"] = CKPT["lm_checkpoint"]  # a full causal LM in model/ + tokenizer/
    return CKPT


def _bundle_run(instance, config, selection=None):
    res = dg.materialize(ALL, instance=instance, resources=RESOURCES, selection=selection, raise_on_error=False,
                         run_config={"ops": {"onnx_bundle": {"config": config}}})
    mats = {e.asset_key.to_user_string(): e.event_specific_data.materialization
            for e in res.get_asset_materialization_events()}
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    return res, mats, checks


def test_onnx_bundle_checks_lineage_verify_and_promotion(home, checkpoints, monkeypatch, capsys):
    docs = [json.dumps({"title": f"doc {i}", "content": t, "url": f"https://example.org/{i}"}) for i, t in enumerate(TEXTS)]
    write_lines(home / "landing" / "docs.jsonl", docs)
    store, cat = ArtifactStore(home), Catalog(home)
    with dg.instance_for_test() as instance:
        res, mats, checks = _bundle_run(instance, FAST)
        assert res.success, [e.message for e in res.all_events if e.is_failure]
        assert checks == PARITY_OK
        md = mats["onnx_bundle"].metadata
        assert md["parity_passed"].value is True and md["cache_hit"].value is False
        good = mats["onnx_bundle"].tags["dagster/data_version"]
        raw_v = mats["raw_docs"].tags["dagster/data_version"]

        # the bundle manifest traces back to the exact raw_docs version, and so does `lineage trace`
        version = store.get("onnx_bundle", good)
        manifest = json.loads((version.path / "bundle" / "manifest.json").read_text())
        assert manifest["lineage"]["raw_docs"] == [raw_v]
        nodes = {n["asset"]: n for n in manifest["lineage"]["nodes"]}
        assert {"cleaned_chunks", "lm_checkpoint", "lora_adapter", "relation_dataset"} <= set(nodes)
        assert all(n["code_version"] and n["fingerprint"] and "run_id" not in n for n in nodes.values())
        assert list(manifest["lineage"]["landing"]) == ["landing:docs.jsonl"]
        assert manifest["models"]["lm"]["source"]["base"]["data_version"] == nodes["lm_checkpoint"]["data_version"]
        # samples: validation texts of the model's dataset first, topped up from the cleaned chunks
        assert [(w["asset"], w["count"]) for w in manifest["models"]["relation"]["samples"]["from"]] == [
            ("relation_dataset", 6), ("cleaned_chunks", 2)]
        assert [w["asset"] for w in manifest["models"]["embedding"]["samples"]["from"]] == ["cleaned_chunks"]
        capsys.readouterr()
        assert lineage(["trace", f"onnx_bundle@{good}"]) == 0
        assert f"raw_docs@{raw_v}" in capsys.readouterr().out

        # catalog: blocking check rows, latency and size figures
        rows = cat.query("SELECT check_name, passed, severity FROM check_results WHERE asset = 'onnx_bundle' "
                         "AND data_version = ? ORDER BY 1", [good]).rows()
        assert rows == [(c, True, "ERROR") for c in sorted(PARITY_OK)]
        stats = dict(cat.query("SELECT stat, value FROM dataset_stats WHERE asset = 'onnx_bundle' AND data_version = ?",
                               [good]).rows())
        facts = dict(cat.query("SELECT fact, value FROM run_facts WHERE asset = 'onnx_bundle' AND data_version = ?",
                               [good]).rows())  # latency is a run fact, not a stat of the version's content
        assert facts["latency_ms.embedding.ort_int8.b1s128"] > 0 and facts["latency_ms.lm.torch_fp32.b1s128"] > 0
        assert facts["build_seconds"] > 0 and not any(k.startswith("latency") for k in stats)
        assert 0 < stats["bytes.relation.int8"] < stats["bytes.relation.fp32"]
        # the GNN ranker: ranking parity on real subgraphs, val queries first; NER: tag agreement per token
        assert stats["parity.gnn.int8.argmax_agreement"] >= 0.95 and stats["parity.ner.int8.argmax_agreement"] >= 0.98
        gnn = manifest["models"]["gnn"]
        assert gnn["kind"] == "ranker" and gnn["inputs"][0] == "x" and gnn["source"]["samples_from_split"]["val"] > 0
        assert manifest["models"]["ner"]["id2label"]["1"] == "B-CONCEPT"
        # int4 beside fp32 and INT8 for the two LMs (own gate, figures in the catalog); the rest say why not
        assert stats["parity.lm.int4.argmax_agreement"] >= 0.9 and 0 < stats["bytes.dpo.int4"] < stats["bytes.dpo.fp32"]
        assert manifest["models"]["gnn"]["quantization_int4"]["status"] == "not_applicable"
        assert manifest["models"]["relation"]["metrics"]["asset"] == "relation_checkpoint"  # its val/test metrics
        details = json.loads(cat.query("SELECT details FROM check_results WHERE check_name = 'lm_int4_parity' AND "
                                       "data_version = ?", [good])["details"][0])
        assert details["status"] == "quantized" and details["quantized_nodes"] == 15

        assert lineage(["verify", str(version.path / "bundle.tar.gz")]) == 0
        assert lineage(["promote", "embedding", good[:8], "--by", "tester", "--note", "first"]) == 0
        again, mats2, checks2 = _bundle_run(instance, FAST, selection=["onnx_bundle"])  # cache hit, checks again
        assert again.success and mats2["onnx_bundle"].metadata["cache_hit"].value is True and all(checks2.values())

        # a deliberately wrong ONNX: the LM's weights perturbed right after export
        real_export = to_onnx.export_onnx

        def wrong_export(module, out_path, *, kind, **kw):
            info = real_export(module, out_path, kind=kind, **kw)
            if kind == "causal_lm":
                out_path.write_bytes(perturb_largest_weight(out_path))
            return info

        with monkeypatch.context() as patch:
            patch.setattr(to_onnx, "export_onnx", wrong_export)
            res, mats, checks = _bundle_run(instance, {**FAST, "skip_quantization": True, "measure_latency": False},
                                            selection=["onnx_bundle"])
        # both causal LMs (lm and the dpo stand-in) went through the perturbed export; int4 is off with
        # skip_quantization, so its gates pass as "nothing to gate"
        assert not res.success and checks == {**PARITY_OK, "lm_parity": False, "dpo_parity": False}
        bad = mats["onnx_bundle"].tags["dagster/data_version"]
        assert bad != good
        capsys.readouterr()
        assert lineage(["promote", "lm", bad]) == 1
        assert lineage(["promote", "embedding", bad]) == 1  # any failed blocking check refuses the bundle
        err = capsys.readouterr().err
        assert "blocking checks failed: dpo_parity" in err and "lm_parity (" in err
        assert lineage(["verify", str(store.get("onnx_bundle", bad).path / "bundle.tar.gz")]) == 1

        assert lineage(["promote", "embedding", good, "--by", "tester", "--note", "second"]) == 0
        capsys.readouterr()
        assert lineage(["promoted", "--format", "csv"]) == 0
        now = pl.read_csv(capsys.readouterr().out.encode())
        assert now.rows() == [("embedding", good, now["model_version"][0], "tester", now["promoted_at"][0], "second")]
        assert now["model_version"][0].startswith("embedding_checkpoint@")
        hist = cat.query("SELECT note FROM promotions ORDER BY promoted_at")["note"].to_list()
        assert hist == ["first", "second"]

        # a checkpoint whose latest blocking check failed is refused before any export work
        rel = store.versions("relation_checkpoint")[-1].data_version
        cat.append({"check_results": [{"asset": "relation_checkpoint", "data_version": rel, "check_name": "val_accuracy",
                                       "passed": False, "severity": "ERROR", "details": "0.2 < 0.5", "created_at": now_utc()}]})
        res, _, _ = _bundle_run(instance, FAST, selection=["onnx_bundle"])
        assert not res.success
        failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
        assert f"relation_checkpoint@{rel}: val_accuracy" in failure.event_specific_data.error.message
