"""retrain_sensor: retrain a model when, and only when, the data it trains on really changed.

A target is due when a current input version differs from the one its latest version was built from
(content digests: re-ingesting identical data requests nothing), and blocked while an input has a failed
blocking check. The tick step by step: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

import dagster as dg

from jobs import export_job, train_job
from ml.catalog import Catalog
from ml.quality.gate import failed_blocking_checks
from ml.store import ArtifactStore
from resources import ArtifactStoreResource, CatalogResource
from sensors.common import (TRIGGER_TAG, active_runs, active_runs_touching, describe_runs, interval_seconds, latest_upstream,
                            parse_cursor, run_config_for, short_digest)

MAX_REMEMBERED_KEYS = 64


@dataclass
class TargetState:
    """One model (or the bundle) against the current versions of its inputs."""

    asset: str
    current: dict[str, str | None]  # input -> latest data version (None: never materialized)
    recorded: dict[str, str] | None  # input -> version the latest target version read; None: never built
    blocked: dict[str, list[dict]] = field(default_factory=dict)  # input -> failed blocking checks

    @property
    def missing(self) -> list[str]:
        return sorted(k for k, v in self.current.items() if v is None)

    @property
    def changed(self) -> list[str]:
        if self.recorded is None:
            return []
        return sorted(k for k, v in self.current.items()
                      if v is not None and k in self.recorded and self.recorded[k] != v)

    @property
    def due(self) -> bool:
        return self.recorded is None or bool(self.changed)

    def why(self) -> str:
        if self.recorded is None:
            return f"{self.asset}: never built"
        return f"{self.asset}: " + ", ".join(
            f"{k} {self.recorded[k][:8]}->{self.current[k][:8]}" for k in self.changed)  # type: ignore[index]


def latest_versions(instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey]) -> dict[dg.AssetKey, str | None]:
    keys = list(keys)
    events = instance.get_latest_materialization_events(keys)
    out: dict[dg.AssetKey, str | None] = {}
    for key in keys:
        event = events.get(key)
        mat = event.asset_materialization if event is not None else None
        out[key] = (mat.tags or {}).get("dagster/data_version") if mat is not None else None
    return out


def recorded_upstream(instance: dg.DagsterInstance, store: ArtifactStore, key: dg.AssetKey,
                      version: str | None) -> dict[str, str] | None:
    """The input versions the target's latest version was built from (None: never built)."""
    if version is None:
        return None
    asset = key.to_user_string()
    if store.has_version(asset, version):
        return dict(store.get(asset, version).manifest.get("upstream", {}))
    return latest_upstream(instance, key)  # version gone from the store: Dagster's copy


def assess(instance: dg.DagsterInstance, repo: dg.RepositoryDefinition, store: ArtifactStore,
           catalog: Catalog, targets: Iterable[dg.AssetKey]) -> dict[dg.AssetKey, TargetState]:
    graph = repo.asset_graph
    targets = list(targets)
    inputs = {t: sorted(graph.get(t).parent_keys) for t in targets}
    all_keys = set(targets) | {p for ps in inputs.values() for p in ps}
    versions = latest_versions(instance, all_keys)
    gate_cache: dict[tuple[str, str], list[dict]] = {}
    states = {}
    for t in targets:
        current = {p.to_user_string(): versions[p] for p in inputs[t]}
        state = TargetState(t.to_user_string(), current, recorded_upstream(instance, store, t, versions[t]))
        for name, version in current.items():
            if version is None:
                continue
            if (name, version) not in gate_cache:
                gate_cache[(name, version)] = failed_blocking_checks(catalog, name, version)
            if gate_cache[(name, version)]:
                state.blocked[name] = gate_cache[(name, version)]
        states[t] = state
    return states


def ancestors(repo: dg.RepositoryDefinition, keys: Iterable[dg.AssetKey]) -> set[dg.AssetKey]:
    graph = repo.asset_graph
    return set().union(*(graph.get_ancestor_asset_keys(k) for k in keys))


def select(repo: dg.RepositoryDefinition, states: dict[dg.AssetKey, TargetState],
           job_keys: set[dg.AssetKey]) -> set[dg.AssetKey]:
    """Due, ready, unblocked targets of one job, plus what in that job is downstream of them."""
    graph = repo.asset_graph

    def ready(key: dg.AssetKey, rebuilt: set[dg.AssetKey]) -> bool:
        s = states[key]
        others = {p.to_user_string() for p in graph.get(key).parent_keys if p not in rebuilt}
        return not (set(s.missing) & others) and not (set(s.blocked) & others)

    chosen = {k for k in job_keys if states[k].due and ready(k, set())}
    grew = bool(chosen)
    while grew:
        grew = False
        for k in sorted(job_keys - chosen):
            if graph.get(k).parent_keys & chosen and ready(k, chosen):
                chosen.add(k)
                grew = True
    return chosen


def retrain_run_key(job_name: str, chosen: set[dg.AssetKey], states: dict[dg.AssetKey, TargetState]) -> str:
    return "retrain-" + short_digest({
        "job": job_name,
        "assets": sorted(k.to_user_string() for k in chosen),
        "inputs": {k.to_user_string(): states[k].current for k in sorted(chosen)},
    })


def plan(instance: dg.DagsterInstance, repo: dg.RepositoryDefinition, store: ArtifactStore, catalog: Catalog,
         already_requested: Iterable[str] = ()) -> tuple[list[dg.RunRequest], list[str]]:
    """(run requests, reasons for everything not requested)."""
    already = set(already_requested)
    notes: list[str] = []
    in_flight = active_runs(instance)  # before any state is read (a run ending mid-tick leaves it stale)
    for job in (train_job, export_job):
        job_keys = set(repo.get_job(job.name).asset_layer.selected_asset_keys)
        if not job_keys:
            notes.append(f"{job.name}: no assets defined")
            continue
        states = assess(instance, repo, store, catalog, job_keys)
        chosen = select(repo, states, job_keys)
        for key, s in states.items():
            if not s.due or key in chosen:
                continue
            if s.missing:
                notes.append(f"{s.asset} waits: {', '.join(s.missing)} not materialized yet")
            for name, checks in s.blocked.items():
                names = ", ".join(c["check_name"] for c in checks)
                notes.append(f"{s.asset} blocked: {name}@{s.current[name]} failed blocking check(s) {names}")
        if not chosen:
            if not any(s.due for s in states.values()):
                notes.append(f"{job.name}: " + ", ".join(sorted(s.asset for s in states.values())) + " up to date")
            continue  # nothing to run (or waiting/blocked, noted above): the checkpoints stay as they are
        reasons = "; ".join(states[k].why() for k in sorted(chosen) if states[k].due)
        busy = active_runs_touching(instance, repo, chosen | ancestors(repo, chosen), in_flight)
        if busy:
            notes.append(f"{job.name} due ({reasons}); waiting for {describe_runs(busy)} to finish")
            return [], notes
        run_key = retrain_run_key(job.name, chosen, states)
        if run_key in already:
            notes.append(f"{job.name} for these input versions already requested ({run_key}); "
                         "if that run failed, see the run_failures table")
            continue
        request = dg.RunRequest(
            run_key=run_key,
            job_name=job.name,
            asset_selection=sorted(chosen),
            run_config=run_config_for(repo, job.name, chosen),
            tags={TRIGGER_TAG: "retrain_sensor",
                  "lineage/assets": ",".join(sorted(k.to_user_string() for k in chosen)),
                  "lineage/input_versions": json.dumps(
                      {k.to_user_string(): states[k].current for k in sorted(chosen)}, sort_keys=True),
                  "lineage/reason": reasons[:500]},
        )
        return [request], notes
    return [], notes


@dg.sensor(
    name="retrain_sensor",
    jobs=[train_job, export_job],
    minimum_interval_seconds=interval_seconds("LINEAGE_RETRAIN_INTERVAL"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests train_job for models whose training inputs changed in content (and passed their "
    "blocking checks), then export_job for the bundle; waits while ingest or training runs are in flight.",
)
def retrain_sensor(context: dg.SensorEvaluationContext, store: ArtifactStoreResource,
                   catalog: CatalogResource) -> dg.SensorResult:
    requested = list(parse_cursor(context.cursor).get("requested", []))
    requests, notes = plan(context.instance, context.repository_def, store.get(), catalog.get(), requested)
    for note in notes:
        context.log.info(note)
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("; ".join(notes) or "nothing to do"),
                               cursor=json.dumps({"requested": requested}))
    for r in requests:
        context.log.info(f"requesting {r.job_name} for {r.tags['lineage/assets']}: {r.tags['lineage/reason']}")
    requested = (requested + [r.run_key for r in requests])[-MAX_REMEMBERED_KEYS:]
    return dg.SensorResult(run_requests=requests, cursor=json.dumps({"requested": requested}))
