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
from dagster_celery.executor import CELERY_CONFIG

# Celery queue of the training and export steps (op tag), beside their Dagster pool "gpu":
# `dagster-celery worker start -q gpu` on the machines with GPUs, `-q dagster` everywhere else.
GPU_QUEUE = "gpu"
CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
GPU_OP_TAGS = {CELERY_QUEUE_TAG: GPU_QUEUE}

_DEFAULT_SCHEMA = multi_or_in_process_executor.config_schema.config_type.fields  # in_process, multiprocess
# every kind optional and without a default (a default would put it into every processed config)
_SCHEMA = {**{name: dg.Field(f.config_type, is_required=False, description=f.description)
              for name, f in _DEFAULT_SCHEMA.items()},
           "celery": dg.Field(dg.Shape(CELERY_CONFIG), is_required=False,
                              description="dagster-celery's executor: every step a Celery task")}


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

    return celery_executor.executor_creation_fn(init_context._replace(executor_config=config))


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
