"""retrain_sensor with build_sensor_context, over stand-in assets under the contract's keys and groups.

The stand-ins go through materialize_versioned like the real assets (store manifests with
``upstream``, catalog rows), so the sensor sees exactly what it sees in production; only
their bodies are trivial, which keeps these tests fast and independent of the training code.
"""

import json
import uuid

import dagster as dg
import pytest

from ml.catalog import Catalog, now_utc
from sensors import retrain_sensor
from tests.helpers.stand_ins import DEFS, RESOURCES, STAND_INS

DATA = ["tokenizer", "tokenized_corpus", "sft_dataset"]


@pytest.fixture
def profile(tmp_path, monkeypatch):
    path = tmp_path / "profile.yaml"
    path.write_text("ops:\n" + "".join(f"  {n}:\n    config:\n      text: from-profile\n"
                                       for n in ["tokenized_corpus", "lm_checkpoint", "lora_adapter", "onnx_bundle"]))
    monkeypatch.setenv("LINEAGE_RUN_CONFIG", str(path))
    return path


class Sensor:
    def __init__(self, instance):
        self.instance, self.cursor = instance, None

    def tick(self) -> dg.SensorResult:
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=DEFS,
                                      resources=RESOURCES)
        result = retrain_sensor(ctx)
        self.cursor = result.cursor
        return result

    def request(self) -> dg.RunRequest:
        result = self.tick()
        assert len(result.run_requests) == 1, result.skip_reason
        return result.run_requests[0]

    def nothing(self) -> str:
        result = self.tick()
        assert result.run_requests == []
        return result.skip_reason.skip_message

    def launch(self, req: dg.RunRequest) -> None:
        """What the daemon does with a request: run those assets with that run config."""
        result = dg.materialize(STAND_INS, instance=self.instance, resources=RESOURCES,
                                selection=req.asset_selection, run_config=req.run_config)
        assert result.success


def _data(instance, **texts):
    """(Re-)materialize data assets; texts: asset -> config text."""
    names = list(texts) or DATA
    result = dg.materialize(STAND_INS, instance=instance, resources=RESOURCES, selection=names,
                            run_config={"ops": {n: {"config": {"text": t}} for n, t in texts.items()}})
    assert result.success
    return {e.asset_key.to_user_string(): e.event_specific_data.materialization.tags["dagster/data_version"]
            for e in result.get_asset_materialization_events()}


def _names(req: dg.RunRequest) -> list[str]:
    return [k.to_user_string() for k in req.asset_selection]


def _trained(instance) -> Sensor:
    sensor = Sensor(instance)
    _data(instance)
    sensor.launch(sensor.request())  # train
    sensor.launch(sensor.request())  # export
    return sensor


def test_changed_training_data_retrains_and_unchanged_data_requests_nothing(home, profile):
    with dg.DagsterInstance.ephemeral() as instance:
        sensor = Sensor(instance)
        assert "not materialized yet" in sensor.nothing()

        _data(instance)
        train = sensor.request()  # never trained: both models, in one run, then the bundle
        assert train.job_name == "train_job" and _names(train) == ["lm_checkpoint", "lora_adapter"]
        assert set(train.run_config["ops"]) == {"lm_checkpoint", "lora_adapter"}  # profile cut to the run
        assert train.tags["lineage/trigger"] == "retrain_sensor"
        assert "already requested" in sensor.nothing()  # not launched yet: never requested twice
        sensor.launch(train)
        export = sensor.request()
        assert export.job_name == "export_job" and _names(export) == ["model_evaluation", "onnx_bundle"]
        sensor.launch(export)
        assert "up to date" in sensor.nothing()

        _data(instance, tokenizer="base", tokenized_corpus="base", sft_dataset="base")  # same content again
        assert "up to date" in sensor.nothing()

        _data(instance, sft_dataset="more sft data")  # only the adapter's data changed
        train = sensor.request()
        assert _names(train) == ["lora_adapter"] and "lora_adapter: sft_dataset" in train.tags["lineage/reason"]
        sensor.launch(train)
        assert _names(sensor.request()) == ["model_evaluation", "onnx_bundle"]

    versions = Catalog(home).query(
        "SELECT asset, count(DISTINCT data_version) AS n FROM asset_versions GROUP BY asset ORDER BY asset").rows()
    assert dict(versions) == {"lm_checkpoint": 1, "lora_adapter": 2, "model_evaluation": 1, "onnx_bundle": 1,
                              "sft_dataset": 2,
                              "tokenized_corpus": 1, "tokenizer": 1}


def test_a_failed_blocking_check_on_an_input_blocks_retraining(home, profile):
    with dg.DagsterInstance.ephemeral() as instance:
        sensor = _trained(instance)
        new = _data(instance, tokenized_corpus="new corpus")["tokenized_corpus"]
        catalog = Catalog(home)

        def check(name, passed, severity):
            catalog.append({"check_results": [{
                "asset": "tokenized_corpus", "data_version": new, "check_name": name, "passed": passed,
                "severity": severity, "details": "{}", "run_id": "r", "created_at": now_utc()}]})

        check("token_ids_in_vocab", False, "ERROR")
        check("shard_balance", False, "WARN")  # a warning never blocks
        reason = sensor.nothing()
        assert f"tokenized_corpus@{new} failed blocking check(s) token_ids_in_vocab" in reason

        check("token_ids_in_vocab", True, "ERROR")  # re-run of the check passes: the latest result counts
        assert _names(sensor.request()) == ["lm_checkpoint", "lora_adapter"]


def test_retrained_models_are_evaluated_and_a_failed_no_regression_holds_the_bundle(home, profile):
    """The automated path evaluates before it exports: after a retraining the sensor requests
    model_evaluation with the bundle; when the new evaluation fails its blocking no_regression check,
    the bundle is not requested (the check passing again releases it)."""
    with dg.DagsterInstance.ephemeral() as instance:
        sensor = _trained(instance)
        _data(instance, sft_dataset="more sft data")
        sensor.launch(sensor.request())  # lora_adapter retrained
        export = sensor.request()
        assert _names(export) == ["model_evaluation", "onnx_bundle"]
        sensor.launch(dg.RunRequest(run_key=None, asset_selection=[dg.AssetKey("model_evaluation")]))
        evaluated = instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
        version = evaluated.asset_materialization.tags["dagster/data_version"]

        def no_regression(passed: bool) -> None:
            Catalog(home).append({"check_results": [{
                "asset": "model_evaluation", "data_version": version, "check_name": "no_regression",
                "passed": passed, "severity": "ERROR", "details": "{}", "run_id": "r", "created_at": now_utc()}]})

        no_regression(False)
        reason = sensor.nothing()
        assert f"onnx_bundle blocked: model_evaluation@{version} failed blocking check(s) no_regression" in reason
        no_regression(True)
        assert _names(sensor.request()) == ["onnx_bundle"]


def test_a_burst_during_a_training_run_yields_one_follow_up_with_the_newest_versions(home, profile):
    with dg.DagsterInstance.ephemeral() as instance:
        sensor = _trained(instance)
        run = dg.DagsterRun(job_name="train_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
        instance.add_run(run)
        seen = []
        for i in range(3):  # three landings' worth of new data while training runs
            seen.append(_data(instance, tokenized_corpus=f"landing {i}")["tokenized_corpus"])
            assert f"waiting for train_job {run.run_id[:8]}" in sensor.nothing()
        instance.report_run_failed(run)

        follow_up = sensor.request()
        inputs = json.loads(follow_up.tags["lineage/input_versions"])
        assert inputs["lm_checkpoint"]["tokenized_corpus"] == seen[-1]
        assert "already requested" in sensor.nothing()  # the same versions are never requested twice
        # an ingest run in flight also holds retraining back: its outputs are about to change
        sensor.launch(follow_up)
        ingest = dg.DagsterRun(job_name="ingest_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTING)
        instance.add_run(ingest)
        _data(instance, tokenized_corpus="during ingest")
        assert "waiting for ingest_job" in sensor.nothing()


def test_a_run_that_ends_while_the_tick_reads_state_holds_the_request_to_the_next_tick(home, profile, monkeypatch):
    """The run's last materializations may land after the tick read the state: requesting on that
    stale view would retrain what the run just built ("never built"). The next tick decides."""
    import sensors.retrain as retrain

    with dg.DagsterInstance.ephemeral() as instance:
        sensor = _trained(instance)
        run = dg.DagsterRun(job_name="train_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
        instance.add_run(run)
        _data(instance, tokenized_corpus="new data")
        real = retrain.assess

        def assess_while_the_run_ends(*args, **kwargs):
            states = real(*args, **kwargs)
            if instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED:
                instance.report_run_failed(run)  # it ends after the state was read
            return states

        monkeypatch.setattr(retrain, "assess", assess_while_the_run_ends)
        assert f"waiting for train_job {run.run_id[:8]}" in sensor.nothing()
        monkeypatch.setattr(retrain, "assess", real)
        assert sensor.request().tags["lineage/trigger"] == "retrain_sensor"  # the next tick requests
