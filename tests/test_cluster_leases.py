"""Upload leases with a heartbeat (ml/storage_work.py ``Lease``, ``lease_dead``) and the fault
points the cluster test uses to catch a worker mid-upload (ml/faults.py ``EVENT@SUBJECT=pause:DIR``).

No server and no sleeping on the clock: leases live in fsspec's in-memory filesystem and age by a
fake clock; the TTL rule is checked at its threshold (just expired vs just renewed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import fsspec
import pytest

from ml import faults
from ml.storage_work import Lease, lease_dead

OTHER_HOST = "another-machine"


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def memfs():
    fs = fsspec.filesystem("memory", skip_instance_cache=True)
    fs.store.clear()
    yield fs
    fs.store.clear()


def _stored(fs, key: str) -> dict:
    return json.loads(fs.cat_file(key))


def _from_elsewhere(lease: dict) -> dict:
    """The lease as gc on another machine sees it (no pid check possible: only the clock counts)."""
    return {**lease, "host": OTHER_HOST}


def test_lease_expires_exactly_at_its_ttl_unless_renewed(memfs):
    clock = Clock()
    lease = Lease("bucket/lh/artifacts/_leases/a~v~1.json", {"asset": "a", "data_version": "v"}, ttl_s=600,
                  clock=clock, fs=memfs, renew_every_s=3600)  # the thread stays idle: renewals by hand
    with lease:
        key = lease.key
        start = _stored(memfs, key)
        assert start["started_at"] == start["renewed_at"] == clock.t and start["ttl_s"] == 600
        # never renewed: alive one tick before the TTL, dead at it
        assert lease_dead(_from_elsewhere(start), clock.t + 599.999) is None
        assert "not renewed" in lease_dead(_from_elsewhere(start), clock.t + 600)
        # renewed 590 s in: at start + 600 s (where the unrenewed lease died) it is alive, until renewal + 600
        clock.t += 590
        lease.renew()
        renewed = _stored(memfs, key)
        assert renewed["renewed_at"] == clock.t and renewed["started_at"] == start["started_at"]
        assert lease_dead(_from_elsewhere(renewed), start["started_at"] + 600) is None
        assert lease_dead(_from_elsewhere(renewed), clock.t + 599.999) is None
        assert lease_dead(_from_elsewhere(renewed), clock.t + 600) is not None
    assert not memfs.exists(key), "a finished upload removes its lease"


def test_same_host_lease_is_dead_exactly_when_its_pid_is_gone(memfs):
    clock = Clock()
    with Lease("b/l.json", {"asset": "a"}, ttl_s=1, clock=clock, fs=memfs, renew_every_s=3600) as lease:
        body = _stored(memfs, lease.key)
        far = clock.t + 10 * 86_400  # on this host the clock does not count: the pid does
        assert lease_dead(body, far, alive=lambda pid: True) is None
        assert "is dead" in lease_dead(body, clock.t, alive=lambda pid: False)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        assert lease_dead({**body, "pid": int(dead)}, clock.t) is not None  # a real pid that exited
        assert lease_dead(body, clock.t) is None  # ours


def test_heartbeat_thread_renews_while_the_upload_runs(memfs):
    """The background thread renews every renew_every_s: a long upload keeps its lease fresh."""
    clock = Clock()
    with Lease("b/l.json", {"asset": "a"}, ttl_s=600, clock=clock, fs=memfs, renew_every_s=0.01) as lease:
        seen = set()
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            clock.t += 1
            seen.add(_stored(memfs, lease.key)["renewed_at"])
            time.sleep(0.005)
        assert len(seen) >= 3 and lease.renewals >= 2
        # an hour of (fake) upload time later, the heartbeat has kept it alive for gc elsewhere
        clock.t += 3600
        deadline = time.monotonic() + 20
        while _stored(memfs, lease.key)["renewed_at"] < clock.t and time.monotonic() < deadline:
            time.sleep(0.005)
        assert lease_dead(_from_elsewhere(_stored(memfs, lease.key)), clock.t + 599) is None


def test_default_renewal_interval_is_a_third_of_the_ttl(memfs):
    assert Lease("b/l.json", {}, ttl_s=900, fs=memfs).renew_every_s == 300


def test_a_failed_upload_keeps_its_lease_for_gc(memfs):
    with pytest.raises(OSError):
        with Lease("b/l.json", {"asset": "a"}, ttl_s=600, fs=memfs, renew_every_s=3600):
            raise OSError("connection reset")
    assert memfs.exists("b/l.json")


# ---- fault points: a subject filter and a pause the test acts on ------------------------------
def test_fault_point_subject_filter(monkeypatch):
    monkeypatch.setenv(faults.ENV, "store.during_upload@onnx_bundle=exit:7")
    assert faults._from_env("store.during_upload", "raw_docs") is None
    assert faults._from_env("store.during_upload") is None
    assert faults._from_env("store.during_upload", "onnx_bundle") == "exit:7"
    monkeypatch.setenv(faults.ENV, "store.during_upload=exit:7")  # no subject: every subject
    assert faults._from_env("store.during_upload", "raw_docs") == "exit:7"
    monkeypatch.setenv(faults.ENV, "store.durnig_upload@x=kill")
    with pytest.raises(ValueError, match="unknown fault event"):
        faults._from_env("store.during_upload", "x")


def test_pause_drops_a_token_and_waits_to_be_killed(tmp_path):
    code = ("from ml.faults import fault_point\n"
            "fault_point('store.during_upload', 'raw_docs')\n"  # not armed for raw_docs: passes
            "print('past raw_docs', flush=True)\n"
            "fault_point('store.during_upload', 'onnx_bundle')\n"
            "print('not reached', flush=True)\n")
    env = {**os.environ, faults.ENV: f"store.during_upload@onnx_bundle=pause:{tmp_path / 'p'}"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        token = tmp_path / "p" / str(proc.pid)
        deadline = time.monotonic() + 60
        while not token.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert token.exists() and proc.poll() is None, "the paused process waits at the fault point"
    finally:
        proc.kill()
    out, _ = proc.communicate(timeout=10)
    assert out.splitlines() == ["past raw_docs"]
