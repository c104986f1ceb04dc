"""The code location's executor: in one process, in a process per step, or on Celery workers, chosen
by the run config's ``execution:`` section (a profile), not by the code. ``celery`` given beside
``in_process`` or ``multiprocess`` wins, so the cluster is an overlay on any profile (DESIGN.md
Module notes).
"""

from __future__ import annotations

import time

import dagster as dg
from dagster._core.definitions.executor_definition import (
    multi_or_in_process_executor,
    multiple_process_executor_requirements,
)
from dagster._core.executor.init import InitExecutorContext
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor

_DEFAULT_SCHEMA = multi_or_in_process_executor.config_schema.config_type.fields  # in_process, multiprocess
# every kind optional and without a default (a default would put it into every processed config)
_SCHEMA = {**{name: dg.Field(f.config_type, is_required=False, description=f.description)
              for name, f in _DEFAULT_SCHEMA.items()},
           "celery": dg.Field(dg.Shape({
               **CELERY_CONFIG,
               "poll_seconds": dg.Field(float, is_required=False, default_value=0.1, description=(
                   "how often the run's process asks the result backend whether a step finished and "
                   "submits the steps it unblocked (dagster-celery polls every 1 s)")),
               "worker_lost_seconds": dg.Field(float, is_required=False, default_value=60.0, description=(
                   "a step fails when the Celery worker running it has not answered a ping for this "
                   "long (a whole worker killed or its machine gone never reports back)")),
           }), is_required=False, description="dagster-celery's executor: every step a Celery task")}


def _requirements(config) -> list:
    return list(multiple_process_executor_requirements()) if ("multiprocess" in config or "celery" in config) else []


@dg.executor(
    name="lineage_executor",
    config_schema=dg.Field(
        dg.Shape(_SCHEMA),
        default_value={"multiprocess": {}},  # Dagster's default, as before
    ),
    requirements=_requirements,
)
def lineage_executor(init_context: InitExecutorContext) -> dg.Executor:
    """``execution: config: {in_process | multiprocess | celery: ...}`` (Dagster's default executor
    plus ``celery``, which wins over the other two); with no ``execution:`` section, Dagster's
    default (a process per step)."""
    kind = choose(init_context.executor_config)
    config = init_context.executor_config[kind]
    if kind != "celery":
        return multi_or_in_process_executor.executor_creation_fn(
            init_context._replace(executor_config={kind: config}))
    from dagster._core.execution.retries import RetryMode

    return PolledCeleryExecutor(  # as dagster_celery.celery_executor builds its executor, plus our two settings
        broker=config.get("broker"), backend=config.get("backend"), config_source=config.get("config_source"),
        include=config.get("include"), retries=RetryMode.from_config(config["retries"]),
        poll_seconds=config.get("poll_seconds", 0.1), worker_lost_seconds=config.get("worker_lost_seconds", 60.0))


class PolledCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor and loop, with two changes. The loop polls every ``poll_seconds``
    instead of its fixed 1 s (a chain of short steps waited up to 1 s after each step). A step whose
    worker stops answering pings for ``worker_lost_seconds`` fails (``WatchedStep``) instead of
    leaving the run waiting for an answer that never comes."""

    def __init__(self, *, poll_seconds: float = 0.1, worker_lost_seconds: float = 60.0, **celery):
        super().__init__(**celery)
        self.poll_seconds = poll_seconds
        self.worker_lost_seconds = worker_lost_seconds

    def execute(self, plan_context, execution_plan):
        from dagster_celery import core_execution_loop
        from dagster_celery.executor import _submit_task

        def submit(app, job_context, step, queue, priority, known_state):
            result = _submit_task(app, job_context, step, queue, priority, known_state)
            return WatchedStep(result, app, job_context.for_step(step), self.worker_lost_seconds)

        # the loop reads its module's TICK_SECONDS at every sleep; a run's process runs one run
        core_execution_loop.TICK_SECONDS = self.poll_seconds
        return core_execution_loop.core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


class WatchedStep:
    """A step's Celery result (``ready``/``get``/``revoke``, all the loop uses) that also ends when
    the worker running the step stops answering. Workers report STARTED with their name
    (``task_track_started``, configs/cluster/*.yaml); while a step is STARTED its worker is pinged
    every quarter of ``lost_after`` (at most every 10 s), and after ``lost_after`` seconds without a
    reply ``get`` returns a STEP_FAILURE naming the worker: the run fails and the step's pool slot
    is freed. (A killed pool process alone Celery reports itself, as WorkerLostError.)"""

    def __init__(self, result, app, step_context, lost_after: float):
        self.result, self.app, self.step_context, self.lost_after = result, app, step_context, lost_after
        self.every = min(10.0, max(lost_after / 4, 0.25))
        self.next_look = time.monotonic() + self.every
        self.silent_since: float | None = None
        self.lost: str | None = None  # the worker's node name, once lost

    def ready(self) -> bool:
        if self.lost is not None or self.result.ready():
            return True
        now = time.monotonic()
        if now >= self.next_look:
            self.next_look = now + self.every
            self._look(now)
        return self.lost is not None

    def _look(self, now: float) -> None:
        info = self.result.info if self.result.state == "STARTED" else None
        worker = info.get("hostname") if isinstance(info, dict) else None
        if not worker or self.app.control.ping(destination=[worker], timeout=min(1.0, self.every)):
            self.silent_since = None
        elif self.silent_since is None:
            self.silent_since = now
        elif now - self.silent_since >= self.lost_after:
            self.lost = worker

    def get(self):
        if self.lost is None or self.result.ready():
            return self.result.get()
        from dagster._core.events import DagsterEvent
        from dagster._core.execution.plan.objects import ErrorSource, StepFailureData
        from dagster._serdes import serialize_value
        from dagster._utils.error import SerializableErrorInfo

        message = (f'Celery worker {self.lost} stopped answering pings for {self.lost_after:g} s while it ran step '
                   f'"{self.step_context.step.key}": the step is lost (no partial version of it is visible; '
                   'run the job again)')
        failure = StepFailureData(error=SerializableErrorInfo(message, [], "CeleryWorkerLost"), user_failure_data=None,
                                  error_source=ErrorSource.UNEXPECTED_ERROR)
        return [serialize_value(DagsterEvent.step_failure_event(self.step_context, failure, message=message))]

    def revoke(self):
        return self.result.revoke()


def choose(executor_config: dict) -> str:
    """The executor kind of a processed ``execution: config:``: celery if given, else the one other."""
    kinds = set(executor_config)
    if "celery" in kinds:
        return "celery"
    if len(kinds) != 1:
        raise dg.DagsterInvalidConfigError(
            f"execution: config: name one executor (in_process, multiprocess or celery), got {sorted(kinds) or 'none'}",
            [], executor_config)
    return kinds.pop()
