"""run_failure_sensor: every failed run of this code location becomes rows of ``run_failures``.

One row per failed step (step key, the error with its stack trace and causes); a run that
failed outside any step (a crashed run worker, a launch error, a cancelled dependency) gets
one row with an empty step key and the run's failure message. ``failed_at`` is the time
Dagster recorded the failure. Query it with
``lineage stats "select * from run_failures order by failed_at desc"``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from ml.catalog import now_utc
from resources import CatalogResource
from sensors.common import interval_seconds

MAX_ERROR_CHARS = 20_000


def _error_text(error) -> str:
    if error is None:
        return ""
    text = error.to_string() if hasattr(error, "to_string") else str(error)
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "\n[... truncated]"


def _when(timestamp: float | None) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc) if timestamp else now_utc()


def failure_rows(instance: dg.DagsterInstance, run: dg.DagsterRun, failure_event: dg.DagsterEvent) -> list[dict]:
    """Rows for ``run_failures``: one per failed step, else one for the run."""
    rows = []
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = event.event_specific_data if event is not None else None
        rows.append({
            "run_id": run.run_id, "job_name": run.job_name, "step_key": event.step_key if event else None,
            "error": _error_text(getattr(data, "error", None)) or entry.user_message,
            "failed_at": _when(entry.timestamp),
        })
    if rows:
        return rows
    record = instance.get_run_record_by_id(run.run_id)
    data = failure_event.event_specific_data
    error = _error_text(getattr(data, "error", None))
    message = failure_event.message or ""
    return [{
        "run_id": run.run_id, "job_name": run.job_name, "step_key": None,
        "error": f"{message}\n{error}".strip() or "run failed (no error recorded)",
        "failed_at": _when(record.end_time if record else None),
    }]


@dg.run_failure_sensor(
    name="run_failure_sensor",
    minimum_interval_seconds=interval_seconds("LINEAGE_FAILURE_INTERVAL"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run of this code location (run id, job, failed step, error) "
    "in the catalog table run_failures.",
)
def run_failure_sensor(context: dg.RunFailureSensorContext, catalog: CatalogResource) -> None:
    rows = failure_rows(context.instance, context.dagster_run, context.failure_event)
    catalog.get().append({"run_failures": rows})
    steps = ", ".join(r["step_key"] or "(run)" for r in rows)
    context.log.info(f"recorded failure of {context.dagster_run.job_name} {context.dagster_run.run_id}: {steps}")
