"""The checkpoint assets on a temporary Dagster instance: versions, cache hits, metrics in the catalog,
the loss curve and device in the metadata, blocking checks that stop downstream, and resume of an
interrupted materialization from work/<asset>/<fingerprint>/."""

from __future__ import annotations

import dagster as dg
import pytest

from ml.catalog import Catalog
from ml.quality.gate import failed_blocking_checks
from ml.store import ArtifactStore, _rmtree
from resources import TorchDevice
from tests.helpers.training import TINY
from tests.helpers.training_assets import asset_resources, mats_of, publish_upstream, run_assets

UPSTREAM = ("tokenizer", "tokenized_corpus", "sft_dataset", "embedding_dataset", "relation_dataset")


def _checks(result) -> dict[tuple[str, str], bool]:
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def test_checkpoint_assets_version_metrics_checks_and_cache(home, tmp_path):
    with dg.instance_for_test() as instance:
        publish_upstream(home, instance, tmp_path / "up")
        cfg = {a: TINY[a] for a in ("lm_checkpoint", "relation_checkpoint")}
        first = run_assets(instance, ["lm_checkpoint", "relation_checkpoint"], cfg)
        assert first.success
        mats = mats_of(first)
        md = mats["lm_checkpoint"].metadata
        assert md["cache_hit"].value is False
        assert md["loss_curve"].value.startswith("![lm_checkpoint loss curve](data:image/png;base64,iVBOR")
        assert md["device"].value.startswith("cpu") and md["peak_memory_mb"].value > 0
        assert md["steps"].value == 30 and md["tokens_per_s"].value > 0
        assert _checks(first) == {**{(a, c): True for a in cfg for c in ("training_loss_fell", "val_metrics_ok")},
                                  ("lm_checkpoint", "experts_not_collapsed"): True}  # dense: no experts

        lm_v = mats["lm_checkpoint"].tags["dagster/data_version"]
        version = ArtifactStore(home).get("lm_checkpoint", lm_v)
        assert {"model", "tokenizer", "metrics.jsonl", "loss_curve.png", "summary.json"} <= \
            {p.name for p in version.path.iterdir()}
        assert version.manifest["config"]["torch_device"] == {"device_type": "cpu", "precision": "fp32", "seed": 0,
                                                              "deterministic": False, "threads": 1}
        work = home / "work" / "lm_checkpoint" / version.manifest["fingerprint"] / "checkpoints"
        assert sorted(p.name for p in work.iterdir()) == ["step-00000020", "step-00000030"]

        cat = Catalog(home)
        n_lines = len((version.path / "metrics.jsonl").read_text().splitlines())
        rows = cat.query("SELECT split, metric, count(*) AS n FROM training_metrics WHERE asset = 'lm_checkpoint' "
                         "AND data_version = ? GROUP BY ALL", [lm_v])
        assert int(rows["n"].sum()) == n_lines
        assert {("train", "loss"), ("val", "loss"), ("val", "perplexity")} <= set(zip(rows["split"], rows["metric"]))
        checks = cat.query("SELECT check_name, passed, severity FROM check_results WHERE asset = 'lm_checkpoint'")
        assert sorted(checks.rows()) == [("experts_not_collapsed", True, "ERROR"), ("training_loss_fell", True, "ERROR"),
                                         ("val_metrics_ok", True, "ERROR")]

        again = run_assets(instance, ["lm_checkpoint"], cfg)
        md2 = mats_of(again)["lm_checkpoint"]
        assert md2.metadata["cache_hit"].value is True and md2.tags["dagster/data_version"] == lm_v
        assert _checks(again) == {("lm_checkpoint", "training_loss_fell"): True, ("lm_checkpoint", "val_metrics_ok"): True,
                                  ("lm_checkpoint", "experts_not_collapsed"): True}


def test_interrupted_materialization_resumes_from_work_dir(home, tmp_path):
    with dg.instance_for_test() as instance:
        publish_upstream(home, instance, tmp_path / "up")
        cfg = {"lm_checkpoint": TINY["lm_checkpoint"]}
        first = mats_of(run_assets(instance, ["lm_checkpoint"], cfg))["lm_checkpoint"]
        store = ArtifactStore(home)
        v = store.get("lm_checkpoint", first.tags["dagster/data_version"])
        weights = (v.path / "model" / "model.safetensors").read_bytes()
        fp = v.manifest["fingerprint"]
        # as if the step had been killed after the step-20 checkpoint: nothing published, step 30 never saved
        _rmtree(v.path)
        (store.asset_dir("lm_checkpoint") / "_fingerprints" / f"{fp}.json").unlink()
        _rmtree(home / "work" / "lm_checkpoint" / fp / "checkpoints" / "step-00000030")

        second = mats_of(run_assets(instance, ["lm_checkpoint"], cfg))["lm_checkpoint"]
        assert second.metadata["cache_hit"].value is False
        assert second.metadata["resumed_from_step"].value == 20
        v2 = store.get("lm_checkpoint", second.tags["dagster/data_version"])
        assert v2.manifest["fingerprint"] == fp
        assert (v2.path / "model" / "model.safetensors").read_bytes() == weights


def test_failed_blocking_check_stops_downstream_and_gates_the_version(home, tmp_path):
    with dg.instance_for_test() as instance:
        publish_upstream(home, instance, tmp_path / "up")
        lm = {**TINY["lm_checkpoint"], "checks": {"val_ceiling": {"perplexity": 1.0}}}  # unreachable
        result = run_assets(instance, ["lm_checkpoint", "lora_adapter"],
                      {"lm_checkpoint": lm, "lora_adapter": TINY["lora_adapter"]}, raise_on_error=False)
        checks = _checks(result)
        assert checks[("lm_checkpoint", "val_metrics_ok")] is False
        assert checks[("lm_checkpoint", "training_loss_fell")] is True
        assert set(mats_of(result)) == {"lm_checkpoint"}  # lora_adapter did not run on a gated base
        v = mats_of(result)["lm_checkpoint"].tags["dagster/data_version"]
        failed = failed_blocking_checks(Catalog(home), "lm_checkpoint", v)
        assert [f["check_name"] for f in failed] == ["val_metrics_ok"]
        assert "perplexity" in failed[0]["details"] and "ceiling 1.0" in failed[0]["details"]


def test_bad_config_fails_naming_the_field(home, tmp_path):
    with dg.instance_for_test() as instance:
        publish_upstream(home, instance, tmp_path / "up")
        bad = {**TINY["lm_checkpoint"], "train": {**TINY["lm_checkpoint"]["train"], "batch_size": 0}}
        result = run_assets(instance, ["lm_checkpoint"], {"lm_checkpoint": bad}, raise_on_error=False)
        assert not result.success
        failure = [e for e in result.all_events if e.is_step_failure][0]
        assert "train.batch_size" in failure.event_specific_data.error.message


def test_gpu_profile_on_cpu_machine_fails_clearly(home, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with dg.instance_for_test() as instance:
        publish_upstream(home, instance, tmp_path / "up")
        from assets.training import lm_checkpoint

        result = dg.materialize([lm_checkpoint], instance=instance, raise_on_error=False,
                                resources={**asset_resources(), "torch_device": TorchDevice(device="cuda", precision="bf16")},
                                run_config={"ops": {"lm_checkpoint": {"config": TINY["lm_checkpoint"]}}})
        assert not result.success
        failure = [e for e in result.all_events if e.is_step_failure][0]
        assert "no CUDA GPU" in failure.event_specific_data.error.message
