"""Sensors (DESIGN.md): the landing sensor, the retrain trigger and the run-failure recorder.

All three default to RUNNING, so `dagster dev` (with its daemon) ingests, retrains and
records failures on its own; switch any of them off in the UI (Automation) if you wish.
"""

from sensors.failures import run_failure_sensor
from sensors.landing import landing_sensor
from sensors.retrain import retrain_sensor

ALL_SENSORS = [landing_sensor, retrain_sensor, run_failure_sensor]

__all__ = ["ALL_SENSORS", "landing_sensor", "retrain_sensor", "run_failure_sensor"]
