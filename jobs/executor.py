"""The code location's executor: in one process, in a process per step, or on Celery workers, chosen
by the run config's ``execution:`` section (a profile), not by the code. ``celery`` given beside
``in_process`` or ``multiprocess`` wins, so the cluster is an overlay on any profile (DESIGN.md
Module notes).
"""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.executor_definition import (
    multi_or_in_process_executor,
    multiple_process_executor_requirements,
)
from dagster._core.executor.init import InitExecutorContext
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor

# Celery queue of the training and export steps (op tag), beside their Dagster pool "gpu":
# `dagster-celery worker start -q gpu` on the machines with GPUs, `-q dagster` everywhere else.
GPU_QUEUE = "gpu"
CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
GPU_OP_TAGS = {CELERY_QUEUE_TAG: GPU_QUEUE}

_DEFAULT_SCHEMA = multi_or_in_process_executor.config_schema.config_type.fields  # in_process, multiprocess
# every kind optional and without a default (a default would put it into every processed config)
_SCHEMA = {**{name: dg.Field(f.config_type, is_required=False, description=f.description)
              for name, f in _DEFAULT_SCHEMA.items()},
           "celery": dg.Field(dg.Shape({
               **CELERY_CONFIG,
               "poll_seconds": dg.Field(float, is_required=False, default_value=0.1, description=(
                   "how often the run's process asks the result backend whether a step finished and "
                   "submits the steps it unblocked (dagster-celery polls every 1 s)")),
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
    from dagster_celery.executor import celery_executor

    config = dict(config)
    poll = config.pop("poll_seconds", 0.1)
    made = celery_executor.executor_creation_fn(init_context._replace(executor_config=config))
    return PolledCeleryExecutor(poll, made)


class PolledCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor whose loop polls every ``poll_seconds`` instead of its fixed 1 s:
    a chain of short steps waited up to 1 s after each step before the next one was submitted
    (on average half of it: about 15 s of a 33-step cached run, README "Beyond one machine")."""

    def __init__(self, poll_seconds: float, made: CeleryExecutor):
        self.__dict__.update(made.__dict__)
        self.poll_seconds = poll_seconds

    def execute(self, plan_context, execution_plan):
        from dagster_celery import core_execution_loop

        # the loop reads its module's TICK_SECONDS at every sleep; a run's process runs one run
        core_execution_loop.TICK_SECONDS = self.poll_seconds
        return super().execute(plan_context, execution_plan)


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
