"""Live progress of one run, read from the Dagster instance's event log (never from the console).

The console can miss a step's last lines (Dagster's compute-log tail is killed when the step ends); the
event log has every event. Usage and why: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, TextIO

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus

from ml.fsutil import pid_alive

TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
SHOWN = {
    DagsterEventType.RUN_START, DagsterEventType.STEP_START, DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_SKIPPED, DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELED,
}


def _md(metadata: dict, key: str):
    value = metadata.get(key)
    return getattr(value, "value", value)


def format_event(entry, start: float) -> str | None:
    """One progress line for an event log entry (None for events not shown)."""
    event = entry.dagster_event
    if event is None:
        return None
    kind = event.event_type
    at = f"[{max(0.0, entry.timestamp - start):6.1f}s]"
    step = event.step_key or ""
    data = event.event_specific_data
    if kind == DagsterEventType.RUN_START:
        return f"{at} run    {entry.run_id} started"
    if kind == DagsterEventType.STEP_START:
        return f"{at} start  {step}"
    if kind == DagsterEventType.ASSET_MATERIALIZATION:
        mat = data.materialization
        md = mat.metadata or {}
        version = _md(md, "data_version") or (mat.tags or {}).get("dagster/data_version") or "?"
        hit = _md(md, "cache_hit")
        how = "cache hit" if hit is True else "computed" if hit is False else "materialized"
        return f"{at} asset  {mat.asset_key.to_user_string()}@{version}  {how}"
    if kind == DagsterEventType.ASSET_CHECK_EVALUATION:
        md = data.metadata or {}
        outcome = "passed" if data.passed else ("FAILED" if data.severity.value == "ERROR" else "warning")
        reused = _md(md, "reused")
        origin = f"  (recorded in run {str(_md(md, 'validated_in_run'))[:8]})" if reused else ""
        return f"{at} check  {data.asset_key.to_user_string()}.{data.check_name}  {outcome}{origin}"
    if kind == DagsterEventType.STEP_SUCCESS:
        return f"{at} done   {step}  {data.duration_ms / 1000:.2f} s"
    if kind == DagsterEventType.STEP_SKIPPED:
        return f"{at} skip   {step}"
    if kind == DagsterEventType.STEP_FAILURE:
        error = data.error.message.strip().splitlines()[0] if data.error and data.error.message else event.message
        return f"{at} FAIL   {step}: {error}"
    if kind == DagsterEventType.RUN_SUCCESS:
        return f"{at} run    succeeded"
    if kind in (DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED):
        return f"{at} run    {'failed' if kind == DagsterEventType.RUN_FAILURE else 'canceled'}"
    return None


def _alive(pid: int | None) -> bool:
    return pid is None or pid_alive(pid)


def find_run(instance: dg.DagsterInstance, tag: tuple[str, str], pid: int | None, timeout: float,
             poll: float) -> dg.DagsterRun | None:
    deadline = time.monotonic() + timeout
    while True:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={tag[0]: tag[1]}), limit=1)
        if runs:
            return runs[0]
        if not _alive(pid) or time.monotonic() > deadline:
            return None
        time.sleep(poll)


def follow(instance: dg.DagsterInstance, run_id: str, out: TextIO = sys.stdout, poll: float = 0.5,
           pid: int | None = None, grace: float = 10.0,
           on_event: Callable[[object], None] | None = None) -> DagsterRunStatus | None:
    """Print the run's progress until it ends; return its final status (None: its launcher died
    ``grace`` seconds before the run reached an end state)."""
    cursor = None
    start = None
    gone_since = None
    while True:
        run = instance.get_run_by_id(run_id)
        status = run.status if run else None
        while True:  # everything recorded so far, in order
            conn = instance.get_records_for_run(run_id, cursor=cursor, of_type=SHOWN, limit=500)
            for record in conn.records:
                entry = record.event_log_entry
                if start is None:
                    start = entry.timestamp
                if on_event is not None:
                    on_event(entry)
                line = format_event(entry, start)
                if line:
                    print(line, file=out, flush=True)
            cursor = conn.cursor
            if not conn.has_more:
                break
        if status in TERMINAL:  # read after the status: no event of the run can come later
            return status
        if not _alive(pid):
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > grace:
                return None
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.progress", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tag", required=True, metavar="KEY=VALUE", help="the run's tag (set with --tags at launch)")
    p.add_argument("--pid", type=int, help="the launching process: stop waiting when it is gone")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the run to appear")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between reads of the event log")
    args = p.parse_args(argv)
    key, sep, value = args.tag.partition("=")
    if not sep:
        p.error("--tag must be KEY=VALUE")
    with dg.DagsterInstance.get() as instance:
        run = find_run(instance, (key, value), args.pid, args.timeout, args.poll)
        if run is None:
            print(f"no run tagged {key}={value} appeared (the launch failed?)", file=sys.stderr)
            return 1
        print(f"run {run.run_id} of {run.job_name}", flush=True)
        status = follow(instance, run.run_id, poll=args.poll, pid=args.pid)
    if status is None:
        print(f"the launching process {args.pid} ended before run {run.run_id} did", file=sys.stderr)
        return 1
    return 0 if status == DagsterRunStatus.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main())
