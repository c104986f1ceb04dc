"""The debug full_pipeline on a one-machine cluster (PostgreSQL, redis-server, SeaweedFS, two Celery
workers: README "Beyond one machine") next to the embedded default (one process, SQLite instance,
local LINEAGE_HOME), back to back on the same sample corpus and the same profile; prints wall times,
their ratio, and the objects and bytes the cluster run wrote to the bucket. Both runs must succeed
(exit 0): the bench fails otherwise and prints the failed run's output tail.

    python bench/cluster.py [--docs N] [--profile configs/debug.yaml]
        N sample documents (default: all, about 3,100); the cluster run adds configs/cluster/executor.yaml
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


def _run(configs: list[str], env: dict, log: Path) -> float:
    """`dagster job execute` full_pipeline with the given -c files; its wall time (exit 0 required)."""
    cmd = [str(BIN / "dagster"), "job", "execute", "-m", "definitions", "-j", "full_pipeline"]
    for c in configs:
        cmd += ["-c", c]
    t0 = time.monotonic()
    with open(log, "wb") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    if rc != 0:
        raise SystemExit(f"{' '.join(configs)}: exit {rc} after {wall:.0f} s\n"
                         + log.read_text(errors="replace")[-4000:])
    return wall


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=0, help="sample documents (0: all)")
    ap.add_argument("--profile", default="configs/debug.yaml", help="run-config profile of both runs")
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
    print(f"load average before: {_load()}", flush=True)
    embedded_s = _run([args.profile], {**base, "LINEAGE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")},
                      root / "embedded.log")
    print(f"embedded (one process, SQLite, local home): {embedded_s:.1f} s, exit 0; load {_load()}", flush=True)

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
        before = fs.find(f"{s3.bucket}/lh", detail=True)  # the landing zone the bench put there
        cluster_s = _run([args.profile, str(REPO / "configs" / "cluster" / "executor.yaml")],
                         {**env, "DAGSTER_HOME": str(runner), "LINEAGE_SCRATCH": str(root / "runner-scratch")},
                         root / "cluster.log")
        objects = {k: o for k, o in fs.find(f"{s3.bucket}/lh", detail=True).items() if k not in before}
        logs = fs.find(f"{s3.bucket}/dagster-logs", detail=True)
        print(f"cluster (2 Celery workers, PostgreSQL, SeaweedFS): {cluster_s:.1f} s, exit 0; load {_load()}")
        print(f"cluster / embedded: {cluster_s / embedded_s:.2f}")
        print(f"written to the bucket: {len(objects)} objects, {sum(o['size'] for o in objects.values())} bytes "
              f"under lh/ (the landing zone not counted); {len(logs)} compute-log objects, "
              f"{sum(o['size'] for o in logs.values())} bytes")
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
