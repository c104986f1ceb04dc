"""landing_sensor: new, changed or removed files in the landing zone -> one ``ingest_job`` run.

Nothing is requested while a file is still being written (its size or mtime moved since the last tick
and it is younger than the settle time), nor when the landing fingerprint (sorted relpath, sha256) is the
one raw_docs last ingested. The tick step by step and the cursor: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from jobs import ingest_job
from ml.fsutil import sha256_file
from ml.datasets.preference import is_preference_file
from ml.raw_docs import MARKERS, is_landing_file, landing_problems, open_landing, stat_landing, visible_files
from ml.storage import is_url
from resources import LandingZone
from sensors.common import (TRIGGER_TAG, active_runs_touching, describe_runs, env_seconds, interval_seconds,
                            latest_upstream, parse_cursor, run_config_for, short_digest)

RAW_DOCS = dg.AssetKey("raw_docs")
PREFERENCES = dg.AssetKey("preference_dataset")  # reads landing/preferences/*.jsonl (ml/datasets/preference.py)
PARTIAL_SUFFIX = ".partial"
DEFAULT_SETTLE_SECONDS = 10.0
DEFAULT_HASH_SECONDS = 20.0


def settle_seconds() -> float:
    value = env_seconds("LINEAGE_LANDING_SETTLE_SECONDS")
    return DEFAULT_SETTLE_SECONDS if value is None else value


def hash_budget_seconds() -> float:
    value = env_seconds("LINEAGE_LANDING_HASH_SECONDS")
    return DEFAULT_HASH_SECONDS if value is None else value


# ---- the landing zone, without Dagster --------------------------------------------------------
def list_landing(root: Path) -> tuple[dict[str, os.stat_result], list[str]]:
    """(files raw_docs or preference_dataset would read: relpath -> stat, ``*.partial`` files in progress).

    The listing rule is raw_docs' own (``ml.raw_docs.visible_files`` / ``is_landing_file``).
    """
    files: dict[str, os.stat_result] = {}
    partial: list[str] = []
    for rel, path in visible_files(root):
        if rel.endswith(PARTIAL_SUFFIX):
            partial.append(rel)
        elif is_landing_file(rel) or is_preference_file(rel):
            try:
                files[rel] = stat_landing(path)  # a local file, or an object (s3:// landing)
            except FileNotFoundError:  # removed between listing and stat
                continue
    return files, partial


def _sha256(path) -> str:
    """sha256 of a landing file, or of an object's streamed bytes."""
    if not is_url(path):
        return sha256_file(path)
    import hashlib

    h = hashlib.sha256()
    with open_landing(path) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass
class Observation:
    complete: dict[str, dict[str, Any]]  # relpath -> {size, mtime_ns, sha256}
    pending: dict[str, dict[str, Any]]  # relpath -> {size, mtime_ns}
    partial: list[str] = field(default_factory=list)
    hashed: list[str] = field(default_factory=list)  # files hashed this tick
    unhashed: list[str] = field(default_factory=list)  # complete, but left for the next tick (hash budget)

    @property
    def digests(self) -> dict[str, str]:
        return {rel: f["sha256"] for rel, f in self.complete.items()}

    @property
    def fingerprint(self) -> str:
        return landing_fingerprint(self.digests)


def landing_fingerprint(digests: dict[str, str]) -> str:
    """Digest of the sorted (relpath, sha256) set: equal bytes under equal names, equal fingerprint."""
    return short_digest(sorted(digests.items()))


def observe(root: Path, previous: dict[str, Any], now: float | None = None, settle: float | None = None,
            hash_budget: float | None = None) -> Observation:
    """Which landing files are complete (with sha256) and which are still being written.

    Hashing stops after ``hash_budget`` seconds (a tick must finish well within Dagster's
    sensor timeout); the files left over stay pending and are hashed on the next ticks.
    """
    now = time.time() if now is None else now
    settle = settle_seconds() if settle is None else settle
    deadline = time.monotonic() + (hash_budget_seconds() if hash_budget is None else hash_budget)
    seen_files = previous.get("files", {})
    seen_pending = previous.get("pending", {})
    stats, partial = list_landing(root)
    obs = Observation({}, {}, partial)
    for rel, st in stats.items():
        key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        old = seen_files.get(rel)
        if old and old["size"] == key["size"] and old["mtime_ns"] == key["mtime_ns"]:
            obs.complete[rel] = old  # unchanged since it was hashed
            continue
        unchanged_since_last_tick = seen_pending.get(rel) == key
        settled = now - st.st_mtime_ns / 1e9 >= settle
        if not (unchanged_since_last_tick or settled):
            obs.pending[rel] = key
            continue
        if time.monotonic() >= deadline:
            obs.pending[rel] = key
            obs.unhashed.append(rel)
            continue
        try:
            digest = _sha256(root / rel)
            after = stat_landing(root / rel)
        except FileNotFoundError:
            continue  # removed while we looked: it is simply gone
        except OSError:  # cannot be read: raw_docs accounts it as unreadable_file, with the same marker
            obs.complete[rel] = {**key, "sha256": MARKERS["unreadable_file"]}
            continue
        if (after.st_size, after.st_mtime_ns) != (key["size"], key["mtime_ns"]):
            obs.pending[rel] = {"size": after.st_size, "mtime_ns": after.st_mtime_ns}  # grew while hashed
            continue
        obs.complete[rel] = {**key, "sha256": digest}
        obs.hashed.append(rel)
    for entry in landing_problems(root):  # links and directories raw_docs accounts without reading them
        obs.complete[entry.relpath] = {"size": 0, "mtime_ns": 0, "sha256": entry.sha256}
    return obs


def next_run_key(previous_key: str | None, fingerprint: str) -> str:
    return "landing-" + short_digest({"after": previous_key or "", "files": fingerprint})


def ingested_digests(instance: dg.DagsterInstance) -> dict[str, str] | None:
    """relpath -> sha256 prefix of the landing files raw_docs (documents) and preference_dataset
    (``preferences/``) last ingested (None: raw_docs never ran)."""
    upstream = latest_upstream(instance, RAW_DOCS)
    if upstream is None:
        return None
    upstream = {**upstream, **(latest_upstream(instance, PREFERENCES) or {})}
    return {k.removeprefix("landing:"): str(v) for k, v in upstream.items() if k.startswith("landing:")}


def changed_since_ingested(digests: dict[str, str], ingested: dict[str, str]) -> set[str]:
    """Landing files added, removed or changed since the last ingest."""
    return {rel for rel in set(digests) | set(ingested)
            if rel not in digests or rel not in ingested or not digests[rel].startswith(ingested[rel])}


def same_as_ingested(digests: dict[str, str], ingested: dict[str, str] | None) -> bool:
    return ingested is not None and not changed_since_ingested(digests, ingested)


def only_preferences_changed(digests: dict[str, str], ingested: dict[str, str] | None,
                             preferences_built: bool) -> bool:
    """True when every change since an ingest that built preference_dataset is under ``preferences/``:
    only preference_dataset reads those files, so the run selects it alone (no document stage to check)."""
    if ingested is None or not preferences_built:
        return False
    changed = changed_since_ingested(digests, ingested)
    return bool(changed) and all(is_preference_file(rel) for rel in changed)


# ---- the sensor --------------------------------------------------------------------------------
@dg.sensor(
    name="landing_sensor",
    job=ingest_job,
    minimum_interval_seconds=interval_seconds("LINEAGE_LANDING_INTERVAL"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New, changed or removed *.jsonl / *.jsonl.gz files in the landing zone (by sha256) "
    "request one ingest_job run; files still being written wait.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
    root = landing.dir()
    cursor = parse_cursor(context.cursor)
    obs = observe(root, cursor)
    requested = cursor.get("requested", {})
    new_cursor = {"files": obs.complete, "pending": obs.pending, "requested": requested}

    def skip(reason: str) -> dg.SensorResult:
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=json.dumps(new_cursor, sort_keys=True))

    if obs.hashed:
        context.log.info(f"hashed {len(obs.hashed)} new or changed file(s): {', '.join(obs.hashed[:5])}")
    if obs.pending:
        writing = sorted(set(obs.pending) - set(obs.unhashed))
        parts = []
        if writing:
            parts.append(f"{len(writing)} file(s) still being written: {', '.join(writing[:5])}")
        if obs.unhashed:
            parts.append(f"{len(obs.unhashed)} file(s) not hashed yet (LINEAGE_LANDING_HASH_SECONDS per tick)")
        return skip("waiting for " + "; ".join(parts))
    if not obs.complete:
        extra = f" ({len(obs.partial)} *.partial file(s) in progress)" if obs.partial else ""
        return skip(f"no *.jsonl / *.jsonl.gz files in {root}{extra}")

    fingerprint = obs.fingerprint
    ingested = ingested_digests(context.instance)
    if same_as_ingested(obs.digests, ingested):
        return skip(f"landing zone unchanged since the last ingest ({len(obs.complete)} files, {fingerprint})")
    if requested.get("fingerprint") == fingerprint:
        return skip(f"ingest of this landing state ({fingerprint}) already requested as {requested.get('run_key')}; "
                    "if that run failed, see the run_failures table")
    busy = active_runs_touching(context.instance, context.repository_def, [RAW_DOCS, PREFERENCES])
    if busy:
        return skip(f"landing changed ({fingerprint}); waiting for {describe_runs(busy)} to finish")

    run_key = next_run_key(requested.get("run_key"), fingerprint)
    new_cursor["requested"] = {"fingerprint": fingerprint, "run_key": run_key}
    built = latest_upstream(context.instance, PREFERENCES) is not None
    selection = [PREFERENCES] if only_preferences_changed(obs.digests, ingested, built) else None
    request = dg.RunRequest(
        run_key=run_key,
        job_name=ingest_job.name,
        asset_selection=selection,
        run_config=run_config_for(context.repository_def, ingest_job.name, selection),
        tags={TRIGGER_TAG: "landing_sensor", "lineage/landing_fingerprint": fingerprint,
              "lineage/landing_files": str(len(obs.complete))},
    )
    what = "preference_dataset only (only preferences/ changed)" if selection else "every stage"
    context.log.info(f"requesting {ingest_job.name} for {len(obs.complete)} landing files ({fingerprint}): {what}")
    return dg.SensorResult(run_requests=[request], cursor=json.dumps(new_cursor, sort_keys=True))
