"""PostgreSQL, Redis and Celery workers for the cluster tests, started in temporary directories on
127.0.0.1 (free ports) and stopped by PID (tests/servers.py has SeaweedFS and the shared helpers).

PostgreSQL (Debian's ``postgresql`` package) refuses to run as root: as root it runs as the
``postgres`` user the package creates (or ``lineage-pg``, created here when there is none).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import HOST, free_port, stop_pid, wait_until

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


# ---- PostgreSQL -----------------------------------------------------------------------------------
def pg_binary(name: str) -> str:
    """``initdb`` / ``postgres`` of Debian's package (/usr/lib/postgresql/<v>/bin), else from PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    which = shutil.which(name)
    if not which:
        raise FileNotFoundError(f"PostgreSQL's {name} not found (Debian package postgresql)")
    return which


def _pg_user() -> str | None:
    """The unprivileged user PostgreSQL runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "lineage-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "lineage-pg"],
                   check=True, capture_output=True)
    return "lineage-pg"


@dataclass
class Postgres:
    url: str  # postgresql+psycopg2://lineage@127.0.0.1:PORT/dagster
    port: int
    root: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: no waiting for clients), SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            stop_pid(self.proc, 1)


def start_postgres(root: Path, db: str = "dagster", timeout: float = 60.0) -> Postgres:
    """initdb + postgres on a free 127.0.0.1 port with its data and socket under ``root``; database ``db``
    owned by role ``lineage`` (trust authentication: a test server). Stop with ``Postgres.stop``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    user = _pg_user()
    prefix: list[str] = []
    if user is not None:
        prefix = ["runuser", "-u", user, "--"]
        pw = pwd.getpwnam(user)
        os.chmod(root, 0o755)
        for parent in list(root.parents)[:-1]:  # the temp dirs above must be traversable by that user
            if parent.stat().st_mode & 0o001 == 0 and str(parent).startswith(("/tmp", "/var/tmp")):
                os.chmod(parent, parent.stat().st_mode | 0o711)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data = root / "data"
    log = root / "postgres.log"
    out = subprocess.run(prefix + [pg_binary("initdb"), "-D", str(data), "-U", "lineage", "--auth=trust",
                                   "-E", "UTF8", "--no-sync", "--no-instructions"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"initdb failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    port = free_port()
    cmd = prefix + [pg_binary("postgres"), "-D", str(data), "-p", str(port), "-h", HOST, "-k", str(root),
                    # a throw-away test server: no durability work
                    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                    "-c", "max_connections=200"]
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = Postgres(f"postgresql+psycopg2://lineage@{HOST}:{port}/{db}", port, root, proc)
    try:
        import psycopg2

        def ready() -> bool:
            psycopg2.connect(host=HOST, port=port, user="lineage", dbname="postgres", connect_timeout=1).close()
            return True

        wait_until(ready, timeout, "PostgreSQL", proc, log)
        conn = psycopg2.connect(host=HOST, port=port, user="lineage", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()
    except BaseException:
        server.stop()
        raise
    return server


# ---- Redis ----------------------------------------------------------------------------------------
@dataclass
class Redis:
    url: str  # redis://127.0.0.1:PORT
    port: int
    root: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def db(self, n: int) -> str:
        return f"{self.url}/{n}"


def start_redis(root: Path, timeout: float = 30.0) -> Redis:
    """Debian's ``redis-server`` on a free 127.0.0.1 port, no persistence. Stop with ``stop_pid(r.proc)``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise FileNotFoundError("redis-server not found (Debian package redis-server)")
    port = free_port()
    log = root / "redis.log"
    cmd = [binary, "--port", str(port), "--bind", HOST, "--dir", str(root), "--save", "", "--appendonly", "no",
           "--daemonize", "no", "--protected-mode", "yes"]
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = Redis(f"redis://{HOST}:{port}", port, root, proc)
    try:
        import redis

        wait_until(lambda: redis.Redis(host=HOST, port=port, socket_timeout=1).ping(), timeout, "redis-server",
                   proc, log)
    except BaseException:
        stop_pid(proc)
        raise
    return server


# ---- Celery workers -------------------------------------------------------------------------------
@dataclass
class Worker:
    name: str  # Celery node name: NAME@hostname
    workdir: Path
    log: Path
    proc: subprocess.Popen = field(repr=False)

    def kill(self) -> None:
        """SIGKILL the whole worker (its CLI, the Celery main process and its pool processes)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_pid(self.proc, 20)


def start_celery_worker(name: str, workdir: Path, env: dict[str, str], queues: tuple[str, ...] = ("dagster",),
                        timeout: float = 90.0) -> Worker:
    """``dagster-celery worker start`` (configs/cluster/worker.yaml; one pool process) named ``name``,
    in its own working directory, with its own DAGSTER_HOME (holding only configs/cluster/dagster.yaml)
    and the given environment (broker, instance, object store, scratch); waits until Celery says ready."""
    workdir = Path(workdir)
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "configs" / "cluster" / "dagster.yaml", home / "dagster.yaml")
    log = workdir / "worker.log"
    cmd = [str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
           "-y", str(REPO / "configs" / "cluster" / "worker.yaml"), "-n", name, "-l", "INFO"]
    cmd += ["-q", ",".join(queues)]  # one celery -Q list (repeated -Q options: the last one wins)
    cmd += ["--", "--concurrency=1", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    full_env = {**env, "DAGSTER_HOME": str(home), "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', os.environ['PATH'])}",
                "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
                                env=full_env, start_new_session=True)
    worker = Worker(name, workdir, log, proc)
    try:
        wait_until(lambda: " ready." in log.read_text(errors="replace"), timeout, f"Celery worker {name}", proc, log)
    except BaseException:
        worker.stop()
        raise
    return worker
