"""What the sensors share: tick intervals, the run-config profile, and "is a run in progress?".
A sensor's RunRequest carries the profile with ``ops:`` cut to exactly the run's ops (Dagster rejects
config for ops not in the run); how profiles and intervals are chosen: DESIGN.md Module notes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import dagster as dg
import yaml

from jobs import cut_profile
from ml.fsutil import digest_json
from ml.paths import REPO_ROOT

DEFAULT_INTERVAL = 30
DEFAULT_PROFILE = "configs/debug.yaml"
PROFILE_ENV = "LINEAGE_RUN_CONFIG"
TRIGGER_TAG = "lineage/trigger"

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def env_seconds(name: str, minimum: float = 0) -> float | None:
    """$<name> as a number of seconds (None when unset or empty); a clear error when it is not one."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a number of seconds") from None
    if value < minimum:
        raise ValueError(f"${name}={raw!r}: must be at least {minimum:g} seconds")
    return value


def interval_seconds(specific_env: str) -> int:
    """Minimum seconds between ticks: $<specific_env>, else $LINEAGE_SENSOR_INTERVAL, else 30."""
    for name in (specific_env, "LINEAGE_SENSOR_INTERVAL"):
        value = env_seconds(name, minimum=1)
        if value is not None:
            return int(value)
    return DEFAULT_INTERVAL


# ---- run-config profile ------------------------------------------------------------------
def profile_paths() -> list[Path]:
    raw = os.environ.get(PROFILE_ENV, "").strip() or DEFAULT_PROFILE
    out = []
    for part in (p.strip() for p in raw.split(os.pathsep)):
        if part:
            path = Path(part).expanduser()
            out.append(path if path.is_absolute() else REPO_ROOT / path)
    return out


def load_profile() -> dict[str, Any]:
    """The profile as a dict (its files merged in order, later keys win); a clear error when a file
    is missing or not a run config."""
    from dagster._utils.merger import deep_merge_dicts

    data: dict[str, Any] = {}
    for path in profile_paths():
        if not path.is_file():
            raise FileNotFoundError(
                f"run-config profile {path} not found (set ${PROFILE_ENV} to a run-config YAML such as "
                f"{DEFAULT_PROFILE}, or several separated by {os.pathsep!r})"
            )
        try:
            part = yaml.safe_load(path.read_text("utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"run-config profile {path} is not valid YAML: {exc}") from None
        if not isinstance(part, dict) or not isinstance(part.get("ops", {}) or {}, dict):
            raise ValueError(f"run-config profile {path}: expected a mapping with an 'ops:' mapping")
        data = deep_merge_dicts(data, part)
    return data


def run_config_for(
    repo: dg.RepositoryDefinition, job_name: str, asset_keys: Iterable[dg.AssetKey] | None = None
) -> dict[str, Any]:
    """The profile's run config for one run of ``job_name`` (restricted to ``asset_keys`` and their
    checks): ``ops:`` cut to the top-level ops of that run."""
    job = repo.get_job(job_name)
    if asset_keys is not None:
        job = job.get_subset(asset_selection=set(asset_keys))
    return cut_profile(load_profile(), set(job.graph.node_dict))


# ---- runs in progress ----------------------------------------------------------------------
def run_asset_keys(run: dg.DagsterRun, repo: dg.RepositoryDefinition) -> set[dg.AssetKey]:
    """Assets a run may materialize: its asset selection, else every asset of its job."""
    if run.asset_selection is not None:
        return set(run.asset_selection)
    if repo.has_job(run.job_name):
        return set(repo.get_job(run.job_name).asset_layer.selected_asset_keys)
    return set()  # a job of another code location: not ours


def active_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE_STATUSES))


def active_runs_touching(
    instance: dg.DagsterInstance, repo: dg.RepositoryDefinition, keys: Iterable[dg.AssetKey],
    earlier: Iterable[dg.DagsterRun] = (),
) -> list[dg.DagsterRun]:
    """Queued or running runs that may materialize any of ``keys``, now or in ``earlier`` (the runs
    in flight when the caller began reading state: one that ended since may have written after the
    read, so the caller's view is stale until its next tick)."""
    keys = set(keys)
    runs = {r.run_id: r for r in list(earlier) + active_runs(instance)}
    return [r for r in runs.values() if run_asset_keys(r, repo) & keys]


def describe_runs(runs: list[dg.DagsterRun], limit: int = 3) -> str:
    shown = ", ".join(f"{r.job_name} {r.run_id[:8]} ({r.status.value.lower()})" for r in runs[:limit])
    return shown + (f" and {len(runs) - limit} more" if len(runs) > limit else "")


# ---- small shared pieces ------------------------------------------------------------------
def latest_upstream(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, str] | None:
    """The ``upstream`` metadata (input -> version) of ``key``'s latest materialization; None
    when it was never materialized or recorded none."""
    event = instance.get_latest_materialization_event(key)
    mat = event.asset_materialization if event is not None else None
    meta = mat.metadata.get("upstream") if mat is not None else None
    value = getattr(meta, "value", meta)
    return dict(value) if isinstance(value, dict) else None


def parse_cursor(raw: str | None) -> dict[str, Any]:
    """A sensor's JSON cursor; {} when there is none or it is unreadable."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def short_digest(obj: Any) -> str:
    return digest_json(obj, 24)
