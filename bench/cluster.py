"""The debug full_pipeline on a one-machine cluster (PostgreSQL, redis-server, SeaweedFS, two Celery
workers: README "Beyond one machine") next to the embedded default (one process, SQLite instance,
local LINEAGE_HOME), back to back on the same sample corpus; prints wall times, their ratio, and the
objects and bytes the cluster run wrote to the bucket.

    python bench/cluster.py [--docs N]      # N sample documents (default: all, about 3,100)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster_servers import start_celery_worker, start_postgres, start_redis  # noqa: E402
from tests.servers import start_seaweedfs, stop_pid  # noqa: E402

BIN = Path(sys.executable).parent


def _run(profile: str, env: dict) -> tuple[float, int]:
    t0 = time.monotonic()
    rc = subprocess.run([str(BIN / "dagster"), "job", "execute", "-m", "definitions", "-j", "full_pipeline",
                         "-c", profile], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode
    return time.monotonic() - t0, rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=0, help="sample documents (0: all)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lineage-bench-cluster-"))
    corpus = root / "corpus"
    cmd = [str(BIN / "lineage"), "--home", str(corpus), "sample-corpus"] + (["--limit", str(args.docs)] if args.docs else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}

    # embedded: local home, SQLite instance, configs/debug.yaml (in_process)
    home = root / "embedded"
    (home / "dagster").mkdir(parents=True)
    shutil.copytree(corpus / "landing", home / "landing")
    shutil.copy(REPO / "configs" / "dagster.yaml", home / "dagster" / "dagster.yaml")
    embedded_s, embedded_rc = _run("configs/debug.yaml", {**base, "LINEAGE_HOME": str(home),
                                                          "DAGSTER_HOME": str(home / "dagster")})
    print(f"embedded (one process, SQLite, local home): {embedded_s:.1f} s, exit {embedded_rc}", flush=True)

    pg, redis, s3, workers = start_postgres(root / "pg"), start_redis(root / "redis"), start_seaweedfs(root / "s3"), []
    try:
        env = {**base, **s3.env(), "LINEAGE_HOME": s3.url("lh"), "LINEAGE_PG_URL": pg.url,
               "LINEAGE_LOG_BUCKET": s3.bucket, "LINEAGE_LOG_PREFIX": "dagster-logs",
               "LINEAGE_CELERY_BROKER": redis.db(0), "LINEAGE_CELERY_BACKEND": redis.db(1)}
        fs = s3.client()
        fs.put(str(corpus / "landing" / "sample"), f"{s3.bucket}/lh/landing/sample", recursive=True)
        workers = [start_celery_worker("w1", root / "w1", {**env, "LINEAGE_SCRATCH": str(root / "w1" / "scratch")},
                                       ("dagster",)),
                   start_celery_worker("w2", root / "w2", {**env, "LINEAGE_SCRATCH": str(root / "w2" / "scratch")},
                                       ("dagster", "gpu"))]
        runner = root / "runner"
        runner.mkdir()
        shutil.copy(REPO / "configs" / "cluster" / "dagster.yaml", runner / "dagster.yaml")
        cluster_s, cluster_rc = _run("configs/cluster/debug.yaml", {**env, "DAGSTER_HOME": str(runner),
                                                                    "LINEAGE_SCRATCH": str(root / "runner-scratch")})
        objects = fs.find(f"{s3.bucket}/lh", detail=True)
        logs = fs.find(f"{s3.bucket}/dagster-logs", detail=True)
        print(f"cluster (2 Celery workers, PostgreSQL, SeaweedFS): {cluster_s:.1f} s, exit {cluster_rc}")
        print(f"cluster / embedded: {cluster_s / embedded_s:.2f}")
        print(f"bucket: {len(objects)} objects, {sum(o['size'] for o in objects.values())} bytes under lh/; "
              f"{len(logs)} compute-log objects, {sum(o['size'] for o in logs.values())} bytes")
        with open("/proc/loadavg") as f:
            print(f"load average after: {f.read().split()[:3]}")
    finally:
        for w in workers:
            w.stop()
        stop_pid(redis.proc)
        pg.stop()
        stop_pid(s3.proc, timeout=3)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
