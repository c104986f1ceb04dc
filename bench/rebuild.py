"""Rebuild the whole pipeline from its records and report what came back byte-identical.

    python bench/rebuild.py                       # configs/debug.yaml, sample corpus, temporary home
    python bench/rebuild.py --profile configs/debug.yaml --home /tmp/rb --keep

Materializes ``full_pipeline`` with the profile (``dagster job execute``, as the README demo does) into a
fresh LINEAGE_HOME, then rebuilds every stored version, upstream first, each from its recorded upstream versions (what
``lineage rebuild onnx_bundle@V --recursive`` does for the bundle's closure), and prints, per asset: identical / within
tolerance / differs / refused, the rebuild seconds, and the totals: pipeline build wall time vs rebuild
wall time (a ratio measured in the same run, on the same machine).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(REPO / "configs" / "debug.yaml"))
    ap.add_argument("--home", default=None, help="LINEAGE_HOME to build in (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the home afterwards")
    ap.add_argument("--skip-build", action="store_true", help="the home already holds a materialized pipeline")
    args = ap.parse_args(argv)

    home = Path(args.home or tempfile.mkdtemp(prefix="bench-rebuild-")) / "lh"
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    (home / "dagster" / "dagster.yaml").write_text((REPO / "configs" / "dagster.yaml").read_text())
    env = {**os.environ, "LINEAGE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "LINEAGE_TRACKING": "off"}
    os.environ.update({k: env[k] for k in ("LINEAGE_HOME", "DAGSTER_HOME", "LINEAGE_TRACKING")})
    build_s = None
    if not args.skip_build:
        subprocess.run([sys.executable, "-m", "ml.cli", "sample-corpus"], cwd=REPO, env=env, check=True)
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "dagster", "job", "execute", "-m", "definitions", "-j",
                              "full_pipeline", "-c", args.profile], cwd=REPO, env=env, capture_output=True, text=True)
        build_s = time.perf_counter() - t0
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
            return 1
    sys.path.insert(0, str(REPO))
    from jobs.rebuild import rebuild_one
    from ml.catalog import Catalog
    from ml.rebuild import rebuild_rows, upstream_closure
    from ml.store import ArtifactStore

    store = ArtifactStore(home)
    from assets import ALL_ASSETS

    defined = {k.to_user_string() for a in ALL_ASSETS for k in a.keys}  # not internal entries (raw_docs__unit, ...)
    latest = {a: vs[-1].data_version for a in store.assets() if a in defined and (vs := store.versions(a))}
    order: list[tuple[str, str]] = []  # every latest version, each after its upstream versions
    for asset in sorted(latest):
        for pair in [*upstream_closure(store, asset, latest[asset]), (asset, latest[asset])]:
            if pair not in order and pair[0] in defined:
                order.append(pair)
    t0 = time.perf_counter()
    outcomes = []
    for a, v in order:
        outcomes.append(rebuild_one(home, a, v, log=lambda m: None))
        print(outcomes[-1].line()[:300], flush=True)
    rebuild_s = time.perf_counter() - t0
    Catalog(home).append({"rebuilds": rebuild_rows(outcomes)})
    print(f"\n{'asset':22s} {'status':17s} {'seconds':>8s}  detail")
    for o in outcomes:
        print(f"{o.asset:22s} {o.status:17s} {o.seconds:8.1f}  {o.detail[:150]}")
    groups: dict[str, list[str]] = {}
    for o in outcomes:
        groups.setdefault(o.status, []).append(o.asset)
    print()
    for status, assets in sorted(groups.items()):
        print(f"{status}: {len(assets)}: {', '.join(assets)}")
    if build_s is not None:
        print(f"pipeline build {build_s:.1f} s; rebuild of all {len(outcomes)} versions {rebuild_s:.1f} s "
              f"(ratio {rebuild_s / build_s:.2f}); profile {args.profile}; {os.cpu_count()} CPUs")
    else:
        print(f"rebuild of all {len(outcomes)} versions {rebuild_s:.1f} s")
    if not args.keep and not args.home:
        import shutil

        shutil.rmtree(home.parent, ignore_errors=True)
    return 0 if all(o.reproduced for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
