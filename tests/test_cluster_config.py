"""The cluster's configuration, without servers: the profile, the instance template, the executor
choice and the Celery queue of the GPU steps (the servers: tests/test_cluster_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from ml.settings import validate_profile

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "configs" / "cluster"


def test_cluster_overlay_moves_the_debug_profile_onto_celery(tmp_path, monkeypatch):
    """configs/cluster/executor.yaml holds only `execution:`; merged over configs/debug.yaml as
    `dagster job execute -c configs/debug.yaml -c configs/cluster/executor.yaml` merges them, the run
    keeps the debug ops and resources and runs on Celery (celery wins over the profile's in_process)."""
    from dagster_shared.yaml_utils import merge_yamls

    from jobs.executor import choose, lineage_executor
    from sensors.common import load_profile

    overlay = yaml.safe_load((CLUSTER / "executor.yaml").read_text())
    assert set(overlay) == {"execution"} and list(overlay["execution"]["config"]) == ["celery"]
    debug = yaml.safe_load((REPO / "configs" / "debug.yaml").read_text())
    merged = merge_yamls([str(REPO / "configs" / "debug.yaml"), str(CLUSTER / "executor.yaml")])
    assert {k: v for k, v in merged.items() if k != "execution"} == {k: v for k, v in debug.items() if k != "execution"}
    assert set(merged["execution"]["config"]) == {"in_process", "celery"}
    assert validate_profile(merged) == []
    from dagster._config import process_config

    monkeypatch.setenv("LINEAGE_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("LINEAGE_CELERY_BACKEND", "redis://127.0.0.1:6379/1")
    processed = process_config(lineage_executor.config_schema.config_type, merged["execution"]["config"])
    assert processed.success, processed.errors
    assert choose(processed.value) == "celery"
    assert choose({"in_process": {}}) == "in_process"
    with pytest.raises(dg.DagsterInvalidConfigError, match="name one executor"):
        choose({"in_process": {}, "multiprocess": {}})
    # the sensors read the same pair from LINEAGE_RUN_CONFIG (os.pathsep-separated, merged the same way)
    monkeypatch.setenv("LINEAGE_RUN_CONFIG", f"configs/debug.yaml:{CLUSTER / 'executor.yaml'}")
    assert load_profile() == merged
    worker = yaml.safe_load((CLUSTER / "worker.yaml").read_text())["execution"]["config"]
    assert worker == overlay["execution"]["config"]["celery"]  # runs and workers meet on one broker


def test_instance_template_loads_postgres_and_s3_logs(monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("LINEAGE_PG_URL", "postgresql+psycopg2://u@127.0.0.1:5432/db")
    monkeypatch.setenv("LINEAGE_LOG_BUCKET", "lineage")
    monkeypatch.setenv("LINEAGE_LOG_PREFIX", "logs")
    config, _ = dagster_instance_config(str(CLUSTER))
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "LINEAGE_PG_URL"}
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"
    embedded = yaml.safe_load((REPO / "configs" / "dagster.yaml").read_text())
    assert config["concurrency"] == embedded["concurrency"]  # the same gpu pool limit and run queue size


def test_executor_is_chosen_by_the_run_config():
    from dagster._config import process_config
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.executor.init import InitExecutorContext
    from dagster_celery.executor import CeleryExecutor

    from definitions import defs
    from jobs.executor import lineage_executor

    job = defs.resolve_job_def("full_pipeline")
    assert job.executor_def is lineage_executor

    def build(execution: dict):
        result = process_config(lineage_executor.config_schema.config_type, execution)
        assert result.success, result.errors
        ctx = InitExecutorContext(job=InMemoryJob(job),
                                  executor_def=lineage_executor, executor_config=result.value,
                                  instance=dg.DagsterInstance.ephemeral())
        return lineage_executor.executor_creation_fn(ctx)

    celery = build({"celery": {"broker": "redis://127.0.0.1:6379/0", "backend": "redis://127.0.0.1:6379/1"}})
    assert isinstance(celery, CeleryExecutor) and celery.broker == "redis://127.0.0.1:6379/0"
    assert celery.backend == "redis://127.0.0.1:6379/1" and celery.poll_seconds == 0.1
    assert build({"celery": {"poll_seconds": 0.5}}).poll_seconds == 0.5
    assert celery.worker_lost_seconds == 60 and build({"celery": {"worker_lost_seconds": 5}}).worker_lost_seconds == 5
    assert type(build({"in_process": {}})).__name__ == "InProcessExecutor"
    assert type(build({"multiprocess": {}})).__name__ == "MultiprocessExecutor"
    with pytest.raises(AssertionError, match="kubernetes"):
        build({"kubernetes": {}})


def test_gpu_steps_carry_pool_and_celery_queue():
    from definitions import defs

    job = defs.resolve_job_def("full_pipeline")
    queues = {name: (getattr(node.definition, "pool", None), node.definition.tags.get("dagster-celery/queue"))
              for name, node in job.graph.node_dict.items()}
    gpu = {n for n, (pool, _) in queues.items() if pool == "gpu"}
    assert {"lm_checkpoint", "lora_adapter", "dpo_adapter", "onnx_bundle", "hf_release"} <= gpu
    assert all(queues[n][1] == "gpu" for n in gpu)
    assert queues["tokenizer"] == (None, None)  # the rest: the default queue "dagster"


def test_celery_loop_polls_at_poll_seconds(monkeypatch):
    """dagster-celery's loop sleeps TICK_SECONDS (1 s) between looks at the result backend: a chain of
    short steps paid up to 1 s after each step. Our executor runs the same loop at ``poll_seconds``."""
    from dagster_celery import core_execution_loop

    from jobs.executor import PolledCeleryExecutor

    seen = []
    monkeypatch.setattr(core_execution_loop, "TICK_SECONDS", 1)
    monkeypatch.setattr(core_execution_loop, "core_celery_execution_loop",
                        lambda ctx, plan, step_execution_fn: seen.append(core_execution_loop.TICK_SECONDS))
    from dagster._core.execution.retries import RetryMode

    PolledCeleryExecutor(retries=RetryMode.DISABLED, broker="redis://127.0.0.1:6379/0").execute(None, None)
    assert seen == [0.1]


def test_a_step_is_lost_after_worker_lost_seconds_without_a_ping_reply(monkeypatch):
    """While a step is STARTED its worker is pinged; it is lost only after ``lost_after`` seconds of
    unanswered pings (not at the first silence, not at the last look before lost_after), and an answer
    resets the wait."""
    import jobs.executor as ex

    clock = [0.0]
    monkeypatch.setattr(ex.time, "monotonic", lambda: clock[0])
    answers: list[bool] = []

    class Result:
        state, info = "STARTED", {"hostname": "w9@h", "pid": 7}

        def ready(self):
            return False

    class Control:
        def ping(self, destination, timeout):
            assert destination == ["w9@h"]
            return [{"w9@h": {"ok": "pong"}}] if answers.pop(0) else []

    app = type("App", (), {"control": Control()})()
    step = ex.WatchedStep(Result(), app, step_context=None, lost_after=8.0)  # looks every 2 s

    def at(t: float, answer: bool | None = None) -> bool:
        clock[0] = t
        if answer is not None:
            answers.append(answer)
        return step.ready()

    assert not at(1.0)  # too early to look: no ping
    assert not at(2.0, False)  # silent since 2 s
    assert not at(4.0, True)  # answered: the wait starts again
    assert not at(6.0, False) and not at(8.0, False) and not at(10.0, False) and not at(12.0, False)
    assert step.lost is None  # silent for 6 s: not yet (8 s needed)
    assert at(14.0, False) and step.lost == "w9@h"  # silent for 8 s: lost
    assert answers == []

    Result.state = "PENDING"  # a queued step (no worker yet) is never pinged
    waiting = ex.WatchedStep(Result(), app, step_context=None, lost_after=8.0)
    clock[0] = 100.0
    assert not waiting.ready() and waiting.lost is None
