"""Named fault-injection points, so tests can kill or stall a writer at an exact moment.

Production code calls ``fault_point(event[, subject])`` where crash safety matters; unarmed, that is one
environment lookup. Tests arm points through ``LINEAGE_FAULTS`` (actions kill, exit, sleep, barrier,
pause): DESIGN.md, "Module notes"; the events (``EVENTS``) are described beside each one.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "LINEAGE_FAULTS"
EVENTS = {
    "store.before_publish": "a version's files and manifest are complete in staging, not yet renamed into place "
                            "(object store: every file uploaded, the manifest not yet written)",
    "store.during_upload": "object store: half of a version's files are uploaded, the rest and the manifest not yet",
    "store.after_publish": "the version is renamed into place; its fingerprint index entry is not written yet",
    "catalog.before_rename": "a catalog batch is complete in catalog/_staging, not yet renamed into batches/",
    "materialize.before_catalog": "the version is published and indexed; no catalog row of this run is written yet",
    "catalog.before_own_batch": "a materialization found no catalog rows of its version and is about to write them",
    "catalog.compact_before_commit": "a compacted catalog batch is complete in catalog/_staging (object store: "
                                     "uploaded), not yet renamed into batches/ (its _commit.json not yet written)",
    "catalog.compact_before_cleanup": "a compacted batch is committed; the batches it absorbed are not removed yet",
    "catalog.compact_during_cleanup": "half of the batches a compaction absorbed are removed, the rest not yet",
}

def _from_env(event: str, subject: str | None = None) -> str | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    for item in spec.split(","):
        name, _, action = item.partition("=")
        name, _, only = name.strip().partition("@")
        if name not in EVENTS:  # a typo would otherwise inject nothing, silently
            raise ValueError(f"{ENV}: unknown fault event {name!r}; known: {sorted(EVENTS)}")
        if name == event and (not only or only == subject):
            return action.strip()
    return None


def pause(directory: str | os.PathLike, timeout: float = 600.0) -> None:
    """Drop the token ``directory/<pid>`` and wait (the test acts on this process meanwhile)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
    raise TimeoutError(f"fault pause {d}: nobody acted on pid {os.getpid()} within {timeout} s")


def barrier(directory: str | os.PathLike, n: int, timeout: float = 60.0) -> None:
    """Wait until ``n`` participants reached this barrier (one token file each in ``directory``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{os.getpid()}-{time.monotonic_ns()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(d.iterdir())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fault barrier {d}: fewer than {n} participants after {timeout} s")
        time.sleep(0.01)


def fault_point(event: str, subject: str | None = None) -> None:
    spec = _from_env(event, subject)
    if not spec:
        return
    kind, _, arg = spec.partition(":")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "exit":
        os._exit(int(arg or 1))
    elif kind == "sleep":
        time.sleep(float(arg))
    elif kind == "barrier":
        directory, _, n = arg.rpartition(":")
        barrier(directory, int(n))
    elif kind == "pause":
        pause(arg)
    else:
        raise ValueError(f"{ENV}: unknown action {spec!r} for {event}")
