"""Training work / resume state at a storage location, and the object-store upload ``Lease``.

A local home trains in ``<home>/work/<asset>/<fp>/`` itself; an ``s3://`` home in a scratch mirror, pulled
before training and pushed while it runs, each checkpoint's ``state.json`` LAST (a checkpoint without it is
never pulled). A lease is renewed while its upload runs, so gc only takes what dead writers left.
Details: DESIGN.md, "Object-store homes" and "Module notes".
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ml.paths import work_dir
from ml.storage import StorageUrl, download, home_scratch, is_url, objects
from ml.train.checkpoint_layout import step_dirs, update_names

STATE = "state.json"  # ml/train/checkpoint_layout.py: STATE
CHECKPOINTS = "checkpoints"


class WorkState:
    def __init__(self, home, asset: str, fingerprint: str):
        self.remote = is_url(home)
        if self.remote:
            self.url: StorageUrl | None = work_dir(StorageUrl(str(home))) / asset / fingerprint
            self.local = work_root(home) / asset / fingerprint
        else:
            self.url = None
            self.local = work_dir(Path(home)) / asset / fingerprint

    def __repr__(self) -> str:
        return f"WorkState({str(self.url or self.local)!r})"

    # ---- remote checkpoints ----------------------------------------------------------------
    def _remote(self) -> dict[str, dict[str, int]]:
        """step dir name -> {relpath in it: size}, for checkpoints whose state.json is in the bucket."""
        found: dict[str, dict[str, int]] = {}
        for key, info in objects(self.url / CHECKPOINTS).items():
            parts = (self.url / CHECKPOINTS).relative(key).split("/")
            if len(parts) >= 2 and parts[0].startswith("step-"):
                found.setdefault(parts[0], {})["/".join(parts[1:])] = int(info["size"])
        return {step: files for step, files in found.items() if STATE in files}

    def _local(self) -> list[Path]:
        root = self.local / CHECKPOINTS
        return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE).is_file()) \
            if root.is_dir() else []

    def pull(self) -> list[str]:
        """Download the complete stored checkpoints missing locally (each into a temporary sibling,
        renamed into place). Returns the step dir names fetched."""
        if not self.remote:
            return []
        got: list[str] = []
        root = self.local / CHECKPOINTS
        for step, files in sorted(self._remote().items()):
            if (root / step / STATE).is_file():
                continue
            tmp = root / f".pull-{step}-{os.getpid()}"
            tmp.mkdir(parents=True, exist_ok=True)
            names = sorted(files)
            for n in names:
                (tmp / n).parent.mkdir(parents=True, exist_ok=True)
            download([(self.url / CHECKPOINTS / step / n).key for n in names], [tmp / n for n in names])
            if (root / step).exists():  # a broken local copy without state.json: replaced
                import shutil

                shutil.rmtree(root / step)
            os.replace(tmp, root / step)
            got.append(step)
        if got:
            _renew_names(self.local)
        return got

    def push(self) -> list[str]:
        """Upload the complete local checkpoints the bucket lacks (state.json last); delete the
        stored ones no longer kept locally (state.json first). Returns the step dir names uploaded."""
        if not self.remote:
            return []
        from ml.storage import filesystem

        fs, sent = filesystem(), []
        stored = self._remote()
        local = {p.name: p for p in self._local()}
        for name, path in local.items():
            if name in stored:
                continue
            try:
                files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
                body = [f for f in files if f != STATE]
                if body:
                    fs.put([str(path / f) for f in body], [(self.url / CHECKPOINTS / name / f).key for f in body])
                fs.put_file(str(path / STATE), (self.url / CHECKPOINTS / name / STATE).key)
                sent.append(name)
            except FileNotFoundError:  # pruned while uploaded: the next push deletes what was sent
                continue
        for name in stored:
            if name not in local and self._local():  # pruned here; never empty the bucket from an empty mirror
                fs.rm_file((self.url / CHECKPOINTS / name / STATE).key)
                fs.rm((self.url / CHECKPOINTS / name).key, recursive=True)
        return sent

    @contextlib.contextmanager
    def syncing(self, interval_s: float = 30.0) -> Iterator[Path]:
        """``pull()``, then the local work directory while a background thread pushes every
        ``interval_s``; a last ``push()`` when the block ends (also when it raises)."""
        self.local.mkdir(parents=True, exist_ok=True)
        if not self.remote:
            yield self.local
            return
        self.pull()
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval_s):
                try:
                    self.push()
                except Exception:  # a failed round is retried next time; the final push reports
                    pass

        thread = threading.Thread(target=loop, name="work-state-push", daemon=True)
        thread.start()
        try:
            yield self.local
        finally:
            stop.set()
            thread.join()
            self.push()


def work_root(home) -> Path:
    """The local directory holding ``<asset>/<fingerprint>/`` work directories of ``home``."""
    if is_url(home):
        return home_scratch(home, "work")
    return work_dir(Path(home))


def work_for(home, asset: str, fingerprint: str) -> Path:
    """The local work directory of (asset, fingerprint), with the bucket's checkpoints pulled first."""
    ws = WorkState(home, asset, fingerprint)
    ws.pull()
    return ws.local


def _renew_names(work: Path) -> None:
    """checkpoint-latest / checkpoint-best links after a pull (checkpoint_layout's own rule)."""
    steps = step_dirs(work)
    if steps:
        import json

        best = json.loads((steps[-1][1] / STATE).read_text("utf-8")).get("best") or {}
        update_names(work, best.get("step") if isinstance(best, dict) else None)



# ---- upload leases ---------------------------------------------------------------------------
class Lease:
    """``with Lease(url, {"asset": ..., "data_version": ...}, ttl_s):`` writes the lease object at
    ``url`` (host, pid, started_at, renewed_at, ttl_s), renews ``renewed_at`` every ``ttl_s / 3``
    from a background thread while the block runs, and deletes it at the end (not when the block
    raises: then it is the evidence gc needs; a SIGKILL leaves it anyway). ``clock`` and ``fs`` are
    for tests (a fake clock, an in-memory filesystem)."""

    def __init__(self, url, fields: dict[str, Any], ttl_s: float, *, clock: Callable[[], float] = time.time,
                 fs=None, renew_every_s: float | None = None):
        self.key = url.key if hasattr(url, "key") else str(url)
        self.ttl_s = float(ttl_s)
        self.clock = clock
        self._fs = fs
        self.renew_every_s = renew_every_s if renew_every_s is not None else max(self.ttl_s / 3.0, 0.01)
        now = clock()
        self.body = {**fields, "host": socket.gethostname(), "pid": os.getpid(), "started_at": now,
                     "renewed_at": now, "ttl_s": self.ttl_s}
        self.renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fs(self):
        if self._fs is None:
            from ml.storage import filesystem

            self._fs = filesystem()
        return self._fs

    def write(self) -> None:
        self.fs.pipe_file(self.key, json.dumps(self.body).encode())

    def renew(self) -> None:
        """Write ``renewed_at = clock()`` (one PUT)."""
        self.body["renewed_at"] = self.clock()
        self.write()
        self.renewals += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.renew_every_s):
            try:
                self.renew()
            except Exception:  # a failed renewal is retried next round; the TTL leaves room for two
                pass

    def __enter__(self) -> "Lease":
        self.write()
        self._thread = threading.Thread(target=self._loop, name="upload-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc_type is None:
            self.fs.rm_file(self.key)


def lease_dead(lease: dict, now: float, *, host: str | None = None,
               alive: Callable[[int], bool] | None = None) -> str | None:
    """Why an upload lease's writer counts as dead at ``now``, or None while it may still upload: on
    this host, its pid is gone; from another host, ``now - max(started_at, renewed_at) >= ttl_s``."""
    from ml.fsutil import pid_alive

    host = socket.gethostname() if host is None else host
    alive = pid_alive if alive is None else alive
    lhost, pid = lease.get("host"), lease.get("pid")
    if lhost == host and isinstance(pid, int):
        return None if alive(pid) else f"writer pid {pid} on this host is dead"
    last = max(float(lease.get("started_at") or 0), float(lease.get("renewed_at") or 0))
    ttl = float(lease.get("ttl_s") or 86_400.0)  # a lease without one: gc's default --min-age
    if now - last >= ttl:
        return f"writer pid {pid} on {lhost}, lease not renewed for {(now - last) / 3600:.2f} h (TTL {ttl / 3600:.2f} h)"
    return None
