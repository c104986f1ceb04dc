"""Where the heavy steps run: Dagster pool ``gpu`` (instance-wide limit, configs/dagster.yaml) and,
under the Celery executor (jobs/executor.py), Celery queue ``gpu`` (op tag ``dagster-celery/queue``),
so that only workers started with ``-q gpu`` (the machines with GPUs) pick them up."""

GPU_POOL = "gpu"
GPU_QUEUE = "gpu"
CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
# keyword arguments of @dg.asset for training and export steps
GPU_STEP = {"pool": GPU_POOL, "op_tags": {CELERY_QUEUE_TAG: GPU_QUEUE}}
