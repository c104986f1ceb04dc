"""hf_release on a temporary Dagster instance: the LMs of an onnx_bundle (a stand-in publishing a bundle
manifest, as the real one records its checkpoint versions) become a versioned release with its greedy
parity check, lineage edges to the exact checkpoints, a cache hit on the second run, and a refusal
when the bundle failed a blocking check."""


import json
import shutil

import dagster as dg

from assets.release import CHECK, hf_release
from ml.catalog import Catalog, now_utc
from ml.store import ArtifactStore
from resources import ArtifactStoreResource, CatalogResource
from tests.helpers.export_models import build_checkpoints
from tests.helpers.stand_ins import publishing_stand_in

CKPT: dict = {}
RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource()}


def _standin(name: str, deps: list[str]):
    def write(out, up):
        if name == "onnx_bundle":  # only what hf_release reads: the producer's versions, per-model parity
            (out / "bundle").mkdir()
            (out / "bundle" / "manifest.json").write_text(json.dumps({
                "producer": {"upstream": up},
                "models": {"lm": {"source": {"asset": "lora_adapter"}, "bytes": {"fp32": 4e5, "int4": 2e5},
                                  "parity": {"int4": {"passed": True, "argmax_agreement": 0.97}}}}}))
        else:
            shutil.copytree(CKPT[name], out, dirs_exist_ok=True)
            (out / "summary.json").write_text(json.dumps({"val": {"loss": 2.0}, "steps": 5}))

    return publishing_stand_in(name, deps, write)


STAND_INS = [_standin("lm_checkpoint", []), _standin("lora_adapter", ["lm_checkpoint"]),
             _standin("dpo_adapter", ["lora_adapter"]), _standin("onnx_bundle", ["lora_adapter", "dpo_adapter"])]


def test_hf_release_asset(home, tmp_path_factory):
    CKPT.update(build_checkpoints(tmp_path_factory.getbasetemp() / "checkpoints"))
    CKPT["dpo_adapter"] = CKPT["lm_checkpoint"]
    config = {"ops": {"hf_release": {"config": {"prompts": 3, "max_new_tokens": 8}}}}
    with dg.instance_for_test() as instance:
        res = dg.materialize([*STAND_INS, hf_release], instance=instance, resources=RESOURCES, run_config=config)
        mats = {e.asset_key.to_user_string(): e.event_specific_data.materialization
                for e in res.get_asset_materialization_events()}
        assert {e.check_name: e.passed for e in res.get_asset_check_evaluations()} == {CHECK: True}
        v = mats["hf_release"].tags["dagster/data_version"]
        store, cat = ArtifactStore(home), Catalog(home)
        root = store.get("hf_release", v).path / "release"
        index = json.loads((root / "release.json").read_text())
        assert sorted(index["models"]) == ["dpo", "lm", "sft"] and index["passed"]
        assert "onnx_bundle@" in (root / "sft" / "README.md").read_text()  # the bundle's int4 parity in the card
        edges = dict(cat.query("SELECT upstream_asset, upstream_version FROM lineage_edges WHERE asset = 'hf_release' "
                               "AND data_version = ?", [v]).rows())
        assert set(edges) == {"onnx_bundle", "lm_checkpoint", "lora_adapter", "dpo_adapter"}
        assert edges["lora_adapter"] == mats["lora_adapter"].tags["dagster/data_version"]
        rows = cat.query("SELECT check_name, passed FROM check_results WHERE asset = 'hf_release'").rows()
        assert rows == [(CHECK, True)]

        again = dg.materialize([hf_release], instance=instance, resources=RESOURCES, run_config=config)
        md = again.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
        assert md["cache_hit"].value is True

        bundle = mats["onnx_bundle"].tags["dagster/data_version"]
        cat.append({"check_results": [{"asset": "onnx_bundle", "data_version": bundle, "check_name": "lm_int4_parity",
                                       "passed": False, "severity": "ERROR", "details": "{}", "created_at": now_utc()}]})
        refused = dg.materialize([hf_release], instance=instance, resources=RESOURCES, run_config=config,
                                 raise_on_error=False)
        assert not refused.success
        msg = next(e for e in refused.all_events if e.is_step_failure).event_specific_data.error.message
        assert f"refusing to release from onnx_bundle@{bundle}" in msg and "lm_int4_parity" in msg
