"""Held-out evaluation: the metric functions at their edges, model_evaluation on real tiny checkpoints
(eval_results rows, metadata tables and the confusion-matrix image, MLflow runs read back through
MlflowClient, an unreachable tracker that only warns) and the blocking regression check against
the promoted models."""

from __future__ import annotations

import hashlib
import random
import shutil
import socket
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from ml.evaluation import metrics
from ml.evaluation import regression

# ---- metric functions -------------------------------------------------------------------------


def test_exact_match_and_token_f1_are_squad_style():
    assert metrics.exact_match("The cat, eats FISH.", "the cat eats fish") == 1.0
    assert metrics.exact_match("the cat eats fish too", "the cat eats fish") == 0.0
    assert metrics.token_f1("fish bones", "fish") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert metrics.token_f1("fish fish", "fish") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # multisets: one match
    assert metrics.token_f1("", "") == 1.0 and metrics.token_f1("", "fish") == 0.0 and metrics.token_f1("hay", "fish") == 0.0


def test_retrieval_ranks_count_ties_against_the_positive():
    sim = np.array([[0.9, 0.1, 0.2], [0.5, 0.5, 0.1], [0.3, 0.8, 0.7]])
    # query 0: rank 1; query 1: tie with doc 0 -> rank 2; query 2: doc 1 scores higher -> rank 2
    out = metrics.retrieval_metrics(sim, ks=(1, 2))
    assert out["recall_at_1"] == pytest.approx(1 / 3) and out["recall_at_2"] == 1.0
    assert out["mrr"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_confusion_matrix_accuracy_and_macro_f1():
    m = metrics.confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4)
    assert m.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    out = metrics.classification_metrics(m)
    assert out["accuracy"] == pytest.approx(3 / 5)
    # F1: label 0 = 2/4, label 1 = 4/5, label 2 = 0; label 3 occurs nowhere and is left out
    assert out["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert metrics.confusion_png(m, ["a", "b", "c", "d"], "t")[:4] == b"\x89PNG"


def test_regression_threshold_is_relative_to_the_baseline_and_direction_aware():
    base = pl.DataFrame({"model_asset": ["m", "m"], "model_version": ["b", "b"], "metric": ["accuracy", "perplexity"],
                         "value": [1.0, 100.0]})

    def status(acc: float, ppl: float) -> list[str]:
        cur = [{"model_asset": "m", "model_version": "c", "metric": "accuracy", "value": acc},
               {"model_asset": "m", "model_version": "c", "metric": "perplexity", "value": ppl},
               {"model_asset": "m", "model_version": "c", "metric": "mrr", "value": 0.1}]
        return regression.compare(cur, base, tolerance=0.25)["status"].to_list()

    assert status(0.75, 125.0) == ["ok", "ok", "no_baseline"]  # exactly the tolerance: still ok
    assert status(0.7499, 125.0) == ["regressed", "ok", "no_baseline"]
    assert status(0.75, 125.01) == ["ok", "regressed", "no_baseline"]  # perplexity: higher is worse
    assert status(2.0, 1.0) == ["ok", "ok", "no_baseline"]
    assert status(float("nan"), 100.0)[0] == "regressed"


# ---- model_evaluation on tiny real checkpoints ----------------------------------------------------
MODELS = ("lm_checkpoint", "lora_adapter", "embedding_checkpoint", "relation_checkpoint")


def _add_test_splits(inputs: dict[str, str]) -> None:
    """make_inputs writes train/val; a test split of fresh documents for each input, by the same recipe."""
    from ml.datasets.sft import chat_prompt, chat_response
    from ml.tokenized_corpus import build_tokenized_corpus
    from tests.helpers.training import ANIMALS, FOODS, PLACES, VERBS, make_texts

    texts = make_texts(200)
    frame = lambda ts, s: pl.DataFrame({"doc_id": [f"{s}{i}" for i in range(len(ts))],
                                        "source": ["synthetic.jsonl"] * len(ts), "text": ts})
    corpus = Path(inputs["tokenized_corpus"])
    shutil.rmtree(corpus)
    build_tokenized_corpus({"train": frame(texts[40:], "t"), "val": frame(texts[:20], "v"),
                            "test": frame(texts[20:40], "x")}, Path(inputs["tokenizer"]), corpus)
    rng = random.Random(7)
    verbs = list(VERBS)
    sft, emb, rel = [], [], []
    for k in range(24):
        i = rng.randrange(len(ANIMALS))
        a, f, p = ANIMALS[i], FOODS[i], PLACES[rng.randrange(len(PLACES))]
        meta = {"doc_id": f"test{k}", "source": "synthetic.jsonl"}
        sft.append({"prompt": chat_prompt(f"What does the {a} eat?", system=""),
                    "response": chat_response(f"The {a} eats {f}."), "subject": a, "relation": "uses", "object": f,
                    **meta})
        emb.append({"anchor": f"{a} in the {p} {k}", "positive": f"The {a} lives in the {p} and eats {f} ({k}).",
                    "kind": "title_chunk", **meta})
        v = verbs[k % len(verbs)]
        rel.append({"text": f"The <e1>{a}</e1> {v} <e2>{f}</e2> near the {p}.", "label": VERBS[v],
                    "chunk_id": f"x{k}", **meta})
    for name, rows in (("sft_dataset", sft), ("embedding_dataset", emb), ("relation_dataset", rel)):
        pl.DataFrame(rows).write_parquet(Path(inputs[name]) / "test.parquet")


def _resources():
    from resources import ArtifactStoreResource, CatalogResource, TorchDevice

    return {"store": ArtifactStoreResource(), "catalog": CatalogResource(),
            "torch_device": TorchDevice(device="cpu", seed=0, threads=1)}


CONFIG = {  # tiny and short: the figures do not matter here, the plumbing does
    "lm_checkpoint": {"model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "seq_len": 32},
                      "train": {"max_steps": 20, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "eval_every": 10,
                                "eval_batches": 2, "save_every": 10, "log_every": 5}},
    "lora_adapter": {"model": {"mode": "lora", "lora": {"r": 4, "alpha": 8}, "max_len": 64},
                     "train": {"max_steps": 10, "batch_size": 8, "lr": 1e-2, "warmup_steps": 2, "eval_every": 5,
                               "eval_batches": 2, "save_every": 10, "log_every": 5}},
    "embedding_checkpoint": {"model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_len": 32},
                             "train": {"max_steps": 20, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2,
                                       "eval_every": 10, "eval_batches": 2, "save_every": 10, "log_every": 5}},
    "relation_checkpoint": {"model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_len": 32},
                            "train": {"max_steps": 20, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2,
                                      "eval_every": 10, "eval_batches": 2, "save_every": 10, "log_every": 5}},
}
CHECKS_OFF = {"min_loss_drop": 0.0}


def _materialize(instance, assets: list[str], config: dict, raise_on_error: bool = True):
    from assets import evaluation, training

    defs = [getattr(training, a, None) or getattr(evaluation, a) for a in assets]
    return dg.materialize(defs, instance=instance, resources=_resources(), raise_on_error=raise_on_error,
                          run_config={"ops": {a: {"config": config[a]} for a in assets if a in config}})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Four tiny checkpoints trained through their assets, then model_evaluation, in one LINEAGE_HOME."""
    from ml.store import ArtifactStore, BuildResult
    from tests.helpers.training import make_inputs

    root = tmp_path_factory.mktemp("evaluation")
    home = root / "home"
    (home / "dagster").mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LINEAGE_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(home / "dagster"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("LINEAGE_TRACKING", raising=False)
        inputs = make_inputs(root / "up")
        _add_test_splits(inputs)
        store = ArtifactStore(home)
        with dg.instance_for_test() as instance:
            for name, src in inputs.items():
                v = store.put(name, lambda out, src=src: (shutil.copytree(src, out, dirs_exist_ok=True), BuildResult())[1],
                              fingerprint=hashlib.sha256(name.encode()).hexdigest()[:16], code_version="test",
                              config={}, upstream={})
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    asset_key=name, tags={"dagster/data_version": v.data_version}))
            cfg = {a: {**CONFIG[a], "checks": CHECKS_OFF} for a in MODELS}
            cfg["model_evaluation"] = {"max_examples": 16, "tolerance": 0.05}
            result = _materialize(instance, [*MODELS, "model_evaluation"], cfg)
            yield {"home": home, "instance": instance, "result": result, "config": cfg, "mp": mp}


def _mat(result, asset: str) -> dg.AssetMaterialization:
    return next(e.event_specific_data.materialization for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == asset)


def test_eval_results_for_every_model_on_its_test_split(evaluated):
    from ml.catalog import Catalog

    cat = Catalog(evaluated["home"])
    rows = cat.query("SELECT model_asset, model_version, dataset_asset, dataset_version, split, metric, value, n "
                     "FROM eval_results ORDER BY model_asset, metric")
    by = {(r["model_asset"], r["metric"]): r for r in rows.iter_rows(named=True)}
    assert {a for a, _ in by} == set(MODELS)
    assert {"loss", "perplexity", "token_accuracy"} <= {m for a, m in by if a == "lm_checkpoint"}
    assert {"exact_match", "token_f1"} == {m for a, m in by if a == "lora_adapter"}
    assert {"recall_at_1", "recall_at_10", "mrr"} == {m for a, m in by if a == "embedding_checkpoint"}
    assert {"accuracy", "macro_f1"} == {m for a, m in by if a == "relation_checkpoint"}
    assert set(rows["split"]) == {"test"}
    assert by[("relation_checkpoint", "accuracy")]["n"] == 16 and by[("embedding_checkpoint", "mrr")]["n"] == 16
    assert by[("lora_adapter", "token_f1")]["dataset_asset"] == "sft_dataset"
    assert by[("lm_checkpoint", "perplexity")]["n"] == 16 * 32  # 16 test blocks of seq_len tokens
    versions = cat.query("SELECT asset, data_version FROM asset_versions")
    latest = dict(versions.iter_rows())
    for (asset, _), r in by.items():
        assert r["model_version"] == latest[asset] and r["dataset_version"]
    assert 0.0 <= by[("embedding_checkpoint", "recall_at_1")]["value"] <= by[("embedding_checkpoint", "recall_at_10")]["value"] <= 1.0
    assert by[("lm_checkpoint", "perplexity")]["value"] > 1.0


def test_the_same_figures_of_another_model_version_are_another_evaluation_version(tmp_path):
    from ml.evaluation import EvalOutput, write_output

    r = EvalOutput("relation_checkpoint", "relation_dataset", [{"metric": "accuracy", "value": 0.5, "n": 4}])
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    write_output(tmp_path / "a", [r], {"relation_checkpoint": "v1"})
    write_output(tmp_path / "b", [r], {"relation_checkpoint": "v2"})
    assert (tmp_path / "a" / "results.parquet").read_bytes() == (tmp_path / "b" / "results.parquet").read_bytes()
    assert (tmp_path / "a" / "index.json").read_text() != (tmp_path / "b" / "index.json").read_text()


def test_metadata_tables_image_and_passed_regression_check(evaluated):
    md = _mat(evaluated["result"], "model_evaluation").metadata
    assert md["relation_checkpoint.confusion_matrix_image"].value.startswith("![relation_checkpoint confusion_matrix]"
                                                                              "(data:image/png;base64,iVBOR")
    assert len(md["lm_checkpoint.generations"].value.records) == 5
    assert len(md["lora_adapter.generations"].value.records) == 12  # the first 12 of 16 in the metadata
    assert {r.data["asset"] for r in md["results"].value.records} == set(MODELS)
    checks = {e.check_name: e.passed for e in evaluated["result"].get_asset_check_evaluations()}
    assert checks["no_regression"] is True  # nothing promoted yet
    assert md["mlflow"].value["status"] == "logged"


def test_mlflow_runs_read_back_through_the_client(evaluated):
    from mlflow import MlflowClient

    from ml.tracking import tracking_uri

    client = MlflowClient(tracking_uri(evaluated["home"]))
    exp = client.get_experiment_by_name("lineage-forge")
    runs = {r.data.tags["asset"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {*MODELS, "model_evaluation"}
    lm = runs["lm_checkpoint"]
    assert lm.data.params["train.lr"] == "0.003" and lm.data.tags["dagster_run_id"] == evaluated["result"].run_id
    history = client.get_metric_history(lm.info.run_id, "train/loss")
    assert [m.step for m in history] == [5, 10, 15, 20]
    assert len(client.get_metric_history(lm.info.run_id, "train/grad_norm")) == 20
    arts = {a.path for a in client.list_artifacts(lm.info.run_id)}
    assert {"loss_curve.png", "summary.json"} <= arts
    ev = runs["model_evaluation"]
    assert "test/relation_checkpoint/accuracy" in ev.data.metrics
    assert ev.data.tags["data_version"] == _mat(evaluated["result"], "model_evaluation").tags["dagster/data_version"]


def test_regression_against_the_promoted_model_blocks(evaluated):
    """A promoted relation model whose recorded test accuracy is above this one's by more than the tolerance."""
    from ml.catalog import Catalog, now_utc

    cat = Catalog(evaluated["home"])
    acc = cat.query("SELECT model_version, value FROM eval_results WHERE model_asset = 'relation_checkpoint' "
                    "AND metric = 'accuracy'").row(0, named=True)
    baseline = "b" * 16
    cat.append({"promotions": [{"component": "relation", "bundle_version": "f" * 16,
                                "model_version": f"relation_checkpoint@{baseline}", "promoted_by": "test",
                                "promoted_at": now_utc(), "note": ""}],
                "eval_results": [{"asset": "model_evaluation", "data_version": "e" * 16,
                                  "model_asset": "relation_checkpoint", "model_version": baseline,
                                  "dataset_asset": "relation_dataset", "dataset_version": "d" * 16, "split": "test",
                                  "metric": "accuracy", "value": acc["value"] / 0.9 + 0.01, "n": 16, "run_id": "r",
                                  "created_at": now_utc()}]})
    again = _materialize(evaluated["instance"], ["model_evaluation"], evaluated["config"], raise_on_error=False)
    check = next(e for e in again.get_asset_check_evaluations() if e.check_name == "no_regression")
    assert check.passed is False and "relation_checkpoint.accuracy" in check.metadata["details"].value
    md = _mat(again, "model_evaluation").metadata
    assert md["cache_hit"].value is True  # same models: the version is reused, the gate runs again
    assert md["mlflow"].value["status"] == "skipped"


def test_unreachable_tracker_warns_and_the_materialization_succeeds(evaluated):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    evaluated["mp"].setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    try:
        cfg = {"relation_checkpoint": {**evaluated["config"]["relation_checkpoint"],
                                       "train": {**CONFIG["relation_checkpoint"]["train"], "max_steps": 12}}}
        result = _materialize(evaluated["instance"], ["relation_checkpoint"], cfg)
    finally:
        evaluated["mp"].delenv("MLFLOW_TRACKING_URI")
    assert result.success
    info = _mat(result, "relation_checkpoint").metadata["mlflow"].value
    assert info["status"] == "failed" and f"127.0.0.1:{port}" in info["uri"] and info["error"]


def test_promote_refuses_a_bundle_whose_evaluation_regressed(tmp_path):
    from ml.catalog import Catalog, check_result_rows
    from ml.export.promote import PromotionRefused, refuse_regressed

    cat = Catalog(tmp_path / "home")
    manifest = {"evaluation": {"asset": "model_evaluation", "data_version": "e" * 16, "models": {}}}
    cat.append({"check_results": check_result_rows("model_evaluation", "e" * 16, "r1",
                                                   [("no_regression", True, "ERROR", "none regressed")])})
    refuse_regressed(cat, "b" * 16, manifest)  # passed: promotion goes on
    refuse_regressed(cat, "b" * 16, {"evaluation": None})  # a bundle without evaluation figures
    import time

    time.sleep(0.01)  # the later result is the one that counts
    cat.append({"check_results": check_result_rows("model_evaluation", "e" * 16, "r2", [
        ("no_regression", False, "ERROR", "1 of 9 compared metrics regressed: relation_checkpoint.accuracy")])})
    with pytest.raises(PromotionRefused, match="regressed.*relation_checkpoint.accuracy"):
        refuse_regressed(cat, "b" * 16, manifest)


def test_the_bundle_carries_the_figures_of_exactly_its_checkpoints(tmp_path):
    from ml.evaluation import EvalOutput, write_output
    from ml.export.sources import bundle_evaluation
    from ml.store import StoredVersion

    out = EvalOutput("relation_checkpoint", "relation_dataset")
    out.add({"accuracy": 0.75}, n=8)
    write_output(tmp_path, [out])
    ev = StoredVersion("model_evaluation", "e" * 16, tmp_path, {"upstream": {"relation_checkpoint": "r1"}})
    warnings: list[str] = []
    assert bundle_evaluation(ev, {"relation_checkpoint": "r1", "lm_checkpoint": "l1"}, warnings.append) == {
        "asset": "model_evaluation", "data_version": "e" * 16, "models": {"relation_checkpoint": {
            "dataset": "relation_dataset", "split": "test", "metrics": {"accuracy": {"value": 0.75, "n": 8}}}}}
    assert not warnings
    # another version of a measured checkpoint, or none of them measured: no figures, and a warning
    assert bundle_evaluation(ev, {"relation_checkpoint": "r2"}, warnings.append) is None
    assert bundle_evaluation(ev, {"lm_checkpoint": "l1"}, warnings.append) is None
    assert len(warnings) == 2 and "measured other model versions ({'relation_checkpoint': 'r2'})" in warnings[0]
