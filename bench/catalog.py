"""Catalog query time before and after ``lineage catalog compact``, at N batches, measured in one run.

    python bench/catalog.py                               # local: 2,000 batches; s3: 500 (SeaweedFS started here)
    python bench/catalog.py --batches 5000 --s3-batches 0 # local only

Per store: append N batches (each as a materialization writes it: an asset_versions row, its lineage
edge and check results; every fifth also a version's own dataset_stats batch, ``own_batch_id``), then
time the questions sensors, checks and gates ask (a fresh ``Catalog(home).query`` each time, as they
do; locally also the same SQL through catalog.duckdb, as outside tools do), median of --rounds. Then
compact (timed), check that every answer is unchanged, and time the same queries again. On the s3 home
the first query after the appends (which fetches every batch's read copy once) is not timed. Prints
seconds and the before/after ratio of each query.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERIES = {
    "latest version of one asset": "select data_version from asset_versions where asset = 'a3' "
                                   "order by created_at desc limit 1",
    "failed checks of one asset": "select count(*) from check_results where asset = 'a3' and not passed",
    "stats of every version (version-owned)": "select count(*), sum(value) from dataset_stats",
}


def fill(home, n: int) -> float:
    from ml.catalog import Catalog, now_utc, own_batch_id

    cat = Catalog(home)
    t = time.perf_counter()
    for i in range(n):
        asset, version = f"a{i % 20}", f"{i:016x}"
        if i % 5 == 0:
            cat.append({"dataset_stats": [{"asset": asset, "data_version": version, "stat": s, "value": float(i)}
                                          for s in ("rows", "bytes", "kept")]}, batch_id=own_batch_id(asset, version))
            continue
        now = now_utc()
        cat.append({
            "asset_versions": [{"asset": asset, "data_version": version, "run_id": f"r{i}", "created_at": now,
                                "path": f"artifacts/{asset}/{version}", "bytes": i, "rows": i, "cache_hit": False}],
            "lineage_edges": [{"asset": asset, "data_version": version, "upstream_asset": "up",
                               "upstream_version": f"{i - 1:016x}", "run_id": f"r{i}", "created_at": now}],
            "check_results": [{"asset": asset, "data_version": version, "check_name": c, "passed": (i + j) % 7 != 0,
                               "severity": "ERROR", "details": "{}", "run_id": f"r{i}", "created_at": now}
                              for j, c in enumerate(("rows_positive", "no_nulls"))],
        })
    return time.perf_counter() - t


def timed(fn, rounds: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def measure(home, rounds: int) -> dict[str, tuple[float, object]]:
    import duckdb

    from ml.catalog import Catalog

    out = {}
    for name, sql in QUERIES.items():
        out[name] = timed(lambda: Catalog(home).query(sql).rows(), rounds)
    cat = Catalog(home)
    if cat.db_path is not None:
        db = cat.ensure_views()

        def outside(sql):
            con = duckdb.connect(str(db), read_only=True)
            try:
                return con.sql(sql).fetchall()
            finally:
                con.close()

        for name, sql in QUERIES.items():
            out[f"{name} (catalog.duckdb)"] = timed(lambda: outside(sql), rounds)
    return out


def bench(label: str, home, n: int, rounds: int) -> None:
    from ml.catalog import Catalog
    from ml.fsutil import scoped_environ

    print(f"\n== {label}: {n} batches ==", flush=True)
    print(f"append {n} batches: {fill(home, n):.1f} s", flush=True)
    Catalog(home).query("select count(*) from asset_versions")  # s3: fetch every read copy once (not timed)
    before = measure(home, rounds)
    t = time.perf_counter()
    with scoped_environ({"LINEAGE_CATALOG_KEEP_S": "0"}):  # the state once the absorbed batches are removed
        result = Catalog(home).compact()  # (by default they stay 15 min, for readers that listed before)
    compact_s = time.perf_counter() - t
    assert result["status"] == "committed", result
    print(f"compaction: {compact_s:.2f} s (folded {len(result['fold'])} batches into {result['batch']}, "
          f"removed {result['removed']})")
    after = measure(home, rounds)
    print(f"{'query':58} {'before s':>9} {'after s':>9} {'ratio':>7}")
    for name, (b, rows_b) in before.items():
        a, rows_a = after[name]
        assert rows_a == rows_b, (name, rows_b, rows_a)  # same answer after compaction
        print(f"{name:58} {b:9.3f} {a:9.3f} {b / a:6.1f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=2000, help="local batches (default 2000)")
    ap.add_argument("--s3-batches", type=int, default=500, help="batches on the SeaweedFS home (0: skip; default 500)")
    ap.add_argument("--rounds", type=int, default=5, help="timed runs of each query (median; default 5)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench("local home", Path(tmp) / "home", args.batches, args.rounds)
        if args.s3_batches:
            from ml.fsutil import scoped_environ
            from tests.servers import seaweedfs

            with seaweedfs() as server, scoped_environ({**server.env(), "LINEAGE_SCRATCH": str(Path(tmp) / "scratch")}):
                bench("s3 home (SeaweedFS)", server.url("bench"), args.s3_batches, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
