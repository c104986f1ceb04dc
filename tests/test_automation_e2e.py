"""End to end: `dagster dev` (webserver + daemon) with the sensors on, against a temporary home.

A new corpus file dropped into the landing zone is ingested by a landing_sensor run and
trained on by a retrain_sensor run (a new lm_checkpoint version), then evaluated and exported by
another (model_evaluation and a bundle that carries its figures); a content-identical copy
(the same documents, gzipped) is ingested too, but trains nothing.
"""

import gzip
import json
import os
import time

import dagster as dg
import pytest

from ml.store import ArtifactStore
from tests.dagster_dev import DagsterDev
from tests.helpers.pipeline import TINY, corpus_lines, failure_text, preference_lines

pytestmark = pytest.mark.slow

TIMEOUT = 420  # seconds for each wait: bounds a failing run only; on a loaded 2-core machine train_job took 150+ s
SENSOR = """query($sel: SensorSelector!) { sensorOrError(sensorSelector: $sel) {
  __typename ... on Sensor { sensorState { status ticks(limit: 20) { status timestamp skipReason runIds } } } } }"""


def _drop(landing, name: str, data: bytes) -> None:
    """Write under a hidden name, then rename into place: how a writer should land a file."""
    tmp = landing / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, landing / name)


def _latest_version(instance, asset: str) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.tags["dagster/data_version"]


def _run_records(instance, job: str):
    return sorted(instance.get_run_records(filters=dg.RunsFilter(job_name=job)), key=lambda r: r.create_timestamp)


def _wait_success(dev, instance, job: str, count: int):
    """Wait until ``job`` has ``count`` runs and the newest succeeded; fail fast on a failed run."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if dev.proc.poll() is not None:
            pytest.fail(f"dagster dev exited: {dev.log_text()[-3000:]}")
        records = _run_records(instance, job)
        for r in records:
            if r.dagster_run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                pytest.fail(f"{job} run {r.dagster_run.run_id} {r.dagster_run.status.value}:\n"
                            f"{failure_text(instance, r.dagster_run.run_id)[-4000:]}")
        if len(records) >= count and records[count - 1].dagster_run.status == dg.DagsterRunStatus.SUCCESS:
            return records[count - 1]
        time.sleep(1)
    pytest.fail(f"no successful {job} run #{count} after {TIMEOUT}s; runs: "
                f"{[(r.dagster_run.job_name, r.dagster_run.status.value) for r in instance.get_run_records()]}\n"
                f"{dev.log_text()[-3000:]}")


def _sensor_state(dev, sensor: str) -> dict:
    sel = {"repositoryLocationName": "lineage_forge", "repositoryName": "__repository__", "sensorName": sensor}
    data = dev.graphql(SENSOR, {"sel": sel})["sensorOrError"]
    assert data["__typename"] == "Sensor", data
    return data["sensorState"]


def _ticks(dev, sensor: str) -> list[dict]:
    return _sensor_state(dev, sensor)["ticks"]


def _wait_skipped_tick(dev, sensor: str, after: float) -> dict:
    """The first tick of ``sensor`` after ``after`` (a timestamp) that requested nothing."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        skipped = [t for t in _ticks(dev, sensor) if t["timestamp"] > after and t["status"] == "SKIPPED"]
        if skipped:
            return min(skipped, key=lambda t: t["timestamp"])
        time.sleep(1)
    pytest.fail(f"{sensor} did not skip a tick after {after}: {_ticks(dev, sensor)[:5]}")


def test_landing_triggers_ingest_and_training_and_an_identical_copy_trains_nothing(home, tmp_path):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(json.dumps(TINY))  # JSON is YAML
    with open(home / "dagster" / "dagster.yaml", "a") as f:  # launch queued runs within a second
        f.write("\nrun_queue:\n  dequeue_interval_seconds: 1\n")
    env = {"LINEAGE_SENSOR_INTERVAL": "1", "LINEAGE_LANDING_SETTLE_SECONDS": "0", "LINEAGE_RUN_CONFIG": str(profile)}
    landing, store = home / "landing", ArtifactStore(home)
    data = ("\n".join(corpus_lines()) + "\n").encode()

    # 1. a new corpus file, with user-supplied DPO pairs (the tiny corpus derives too few for a val
    # split). Both land before the daemon starts, so its first landing tick sees them together.
    (landing / "preferences").mkdir(parents=True, exist_ok=True)
    _drop(landing / "preferences", "prefs.jsonl", ("\n".join(preference_lines()) + "\n").encode())
    _drop(landing, "docs.jsonl", data)

    with DagsterDev(home, tmp_path / "dagster_dev.log", env=env) as dev:
        dev.wait_loaded()
        instance = dg.DagsterInstance.get()
        for sensor in ("landing_sensor", "retrain_sensor", "run_failure_sensor"):  # on by default
            assert _sensor_state(dev, sensor)["status"] == "RUNNING"

        # one ingest, then one training run on what it produced
        ingest = _wait_success(dev, instance, "ingest_job", 1)
        assert ingest.dagster_run.tags["lineage/trigger"] == "landing_sensor"
        corpus_version = _latest_version(instance, "tokenized_corpus")
        train = _wait_success(dev, instance, "train_job", 1)
        assert train.dagster_run.tags["lineage/trigger"] == "retrain_sensor"
        (lm,) = store.versions("lm_checkpoint")  # a new checkpoint, trained on that corpus
        assert lm.manifest["upstream"]["tokenized_corpus"] == corpus_version
        # then the export: the new checkpoints evaluated on their test splits, and a bundle of them
        # that carries those figures
        export = _wait_success(dev, instance, "export_job", 1)
        assert export.dagster_run.tags["lineage/trigger"] == "retrain_sensor"
        (evaluation,) = store.versions("model_evaluation")
        assert evaluation.manifest["upstream"]["lm_checkpoint"] == lm.data_version
        (bundle,) = store.versions("onnx_bundle")
        assert bundle.manifest["upstream"]["model_evaluation"] == evaluation.data_version

        # 2. the same documents again, gzipped under another name: ingested, and nothing to retrain
        _drop(landing, "docs.jsonl.gz", gzip.compress(data))
        second = _wait_success(dev, instance, "ingest_job", 2)
        raw = instance.get_latest_materialization_event(dg.AssetKey("raw_docs")).asset_materialization
        assert set(raw.metadata["upstream"].value) == {"landing:docs.jsonl", "landing:docs.jsonl.gz"}
        assert _latest_version(instance, "tokenized_corpus") == corpus_version  # content-identical
        tick = _wait_skipped_tick(dev, "retrain_sensor", after=second.end_time)
        assert "train_job: " in tick["skipReason"] and "up to date" in tick["skipReason"], tick
        assert [r.dagster_run.tags.get("lineage/reason") for r in _run_records(instance, "train_job")][1:] == []
        assert [v.data_version for v in store.versions("lm_checkpoint")] == [lm.data_version]
