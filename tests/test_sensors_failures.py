"""run_failure_sensor writes failed runs (run id, job, step, error) into the catalog."""

import uuid

import dagster as dg

from ml.catalog import Catalog
from resources import CatalogResource
from sensors import run_failure_sensor


@dg.asset
def fine() -> int:
    return 1


@dg.asset(deps=[fine])
def broken() -> None:
    raise ValueError("tokenizer vocab is empty: no documents survived cleaning")


def _evaluate(instance, run):
    (entry,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_failure_sensor", dagster_event=entry.dagster_event, dagster_instance=instance,
        dagster_run=run, resources={"catalog": CatalogResource()},
    ).for_run_failure()
    run_failure_sensor(ctx)


def test_failed_step_is_recorded_with_its_error(home):
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([fine, broken], instance=instance, raise_on_error=False)
        assert not result.success
        _evaluate(instance, instance.get_run_by_id(result.run_id))

    rows = Catalog(home).query("SELECT * FROM run_failures").to_dicts()
    assert len(rows) == 1
    row = rows[0]
    assert row["run_id"] == result.run_id and row["job_name"] == "__ephemeral_asset_job__"
    assert row["step_key"] == "broken"
    assert "ValueError: tokenizer vocab is empty" in row["error"] and "Stack Trace" in row["error"]
    assert row["failed_at"] is not None


def test_a_run_that_failed_outside_any_step_gets_one_row(home):
    with dg.DagsterInstance.ephemeral() as instance:
        run = dg.DagsterRun(job_name="train_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
        instance.add_run(run)
        instance.report_run_failed(run, "run worker exited unexpectedly (killed)")
        _evaluate(instance, instance.get_run_by_id(run.run_id))

    (row,) = Catalog(home).query("SELECT * FROM run_failures").to_dicts()
    assert (row["run_id"], row["job_name"], row["step_key"]) == (run.run_id, "train_job", None)
    assert "run worker exited unexpectedly (killed)" in row["error"]
