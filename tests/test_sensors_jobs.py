"""Jobs by asset group, the gpu pool, and the dagster.yaml template's concurrency settings."""

import logging
import shutil
import uuid
from datetime import timedelta
from types import SimpleNamespace

import dagster as dg

from definitions import defs
from tests.conftest import REPO
from tests.helpers.stand_ins import DEFS as STAND_IN_DEFS


def _keys(d: dg.Definitions, job: str) -> set[str]:
    return {k.to_user_string() for k in d.get_repository_def().get_job(job).asset_layer.selected_asset_keys}


def test_jobs_select_their_groups():
    assert _keys(STAND_IN_DEFS, "ingest_job") == {"tokenizer", "tokenized_corpus", "sft_dataset"}
    assert _keys(STAND_IN_DEFS, "train_job") == {"lm_checkpoint", "lora_adapter"}
    assert _keys(STAND_IN_DEFS, "export_job") == {"model_evaluation", "onnx_bundle"}
    assert _keys(STAND_IN_DEFS, "full_pipeline") == {
        "tokenizer", "tokenized_corpus", "sft_dataset", "lm_checkpoint", "lora_adapter", "model_evaluation",
        "onnx_bundle"}
    real = defs.get_repository_def().asset_graph
    by_group = {}
    for key in real.get_all_asset_keys():
        by_group.setdefault(real.get(key).group_name, set()).add(key.to_user_string())
    assert set(by_group) <= {"data", "corpus", "datasets", "models", "evaluation", "export", "experiments"}
    assert {"raw_docs", "cleaned_chunks", "relation_triples"} <= _keys(defs, "ingest_job") == set().union(
        *(by_group.get(g, set()) for g in ("data", "corpus", "datasets")))
    assert _keys(defs, "train_job") == by_group.get("models", set())
    assert _keys(defs, "export_job") == by_group["evaluation"] | by_group["export"] == {
        "model_evaluation", "onnx_bundle", "hf_release"}
    # every asset but the sweeps (experiments: sweep_job, on demand)
    assert _keys(defs, "full_pipeline") == set().union(*(v for g, v in by_group.items() if g != "experiments"))
    assert _keys(defs, "sweep_job") == by_group["experiments"] == {"model_sweep"}
    assert "model_evaluation" in _keys(defs, "full_pipeline")


def test_training_and_export_ops_run_in_pool_gpu():
    graph = defs.get_repository_def().asset_graph
    heavy = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()
             if graph.get(k).group_name in ("models", "evaluation", "export")}
    assert {"lm_checkpoint", "model_evaluation", "onnx_bundle"} <= set(heavy)
    assert {name: pools for name, pools in heavy.items() if pools != {"gpu"}} == {}


def test_instance_template_limits_gpu_to_one_slot_and_frees_slots_of_dead_runs(tmp_path, monkeypatch):
    from dagster._daemon.monitoring import concurrency as slots_daemon

    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(REPO / "configs" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.run_monitoring_enabled
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("gpu")
        dead, waiting = (dg.DagsterRun(job_name="train_job", run_id=str(uuid.uuid4()),
                                       status=dg.DagsterRunStatus.STARTED) for _ in range(2))
        for run in (dead, waiting):
            instance.add_run(run)
        assert storage.claim_concurrency_slot("gpu", dead.run_id, "lm_checkpoint").is_claimed
        assert not storage.claim_concurrency_slot("gpu", waiting.run_id, "lm_checkpoint").is_claimed  # limit 1

        instance.report_run_failed(dead, "run worker died")  # its step never released the slot
        assert storage.get_concurrency_info("gpu").active_slot_count == 1
        grace = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
        later = slots_daemon.get_current_datetime() + timedelta(seconds=grace + 5)
        monkeypatch.setattr(slots_daemon, "get_current_datetime", lambda: later)
        list(slots_daemon.execute_concurrency_slots_iteration(SimpleNamespace(instance=instance),
                                                              logging.getLogger("test")))
        assert storage.claim_concurrency_slot("gpu", waiting.run_id, "lm_checkpoint").is_claimed
