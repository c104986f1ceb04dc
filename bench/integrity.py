"""What integrity on read costs: time spent verifying versions against their manifests, as a share
of the run that does it, measured in the same run.

    python bench/integrity.py --mb 100      # raw_docs + cleaned_chunks on bench/curation.py's 100 MB corpus
    python bench/integrity.py --debug       # full_pipeline with configs/debug.yaml on the sample corpus

Each mode materializes the assets twice in one process (in-process executor, a temporary
LINEAGE_HOME): a first run that builds every version (each step verifies the upstream versions it
reads), then a rerun where every asset is a cache hit (each hit is verified before reuse). Every
call of ``ml.store.verify_tree`` (the whole integrity check: size, then a streamed sha256 of every
file) is timed, and the bench prints, per run, verify seconds / run wall seconds and the bytes
hashed. The goal (issue 15) is <= 5% of a run that builds something.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class VerifyTimer:
    """Wraps ml.store.verify_tree (where both stores call it): total seconds, calls and bytes it checked."""

    def __init__(self):
        import ml.store_base as store
        import ml.store_local as store_local
        import ml.store_object as store_object

        self.real = store.verify_tree
        self.seconds, self.calls, self.bytes = 0.0, 0, 0
        for module in (store, store_local, store_object):
            module.verify_tree = self._timed

    def _timed(self, root, manifest, data_version=None):
        t = time.perf_counter()
        try:
            return self.real(root, manifest, data_version)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1
            self.bytes += sum(f["bytes"] for f in manifest.get("files", []))

    def take(self) -> tuple[float, int, int]:
        out = (self.seconds, self.calls, self.bytes)
        self.seconds, self.calls, self.bytes = 0.0, 0, 0
        return out


def run(label: str, materialize, timer: VerifyTimer) -> dict:
    t = time.perf_counter()
    ok = materialize()
    wall = time.perf_counter() - t
    seconds, calls, nbytes = timer.take()
    share = seconds / wall if wall else 0.0
    print(f"{label:34s} run {wall:8.2f} s | verify {seconds:7.3f} s in {calls:3d} checks, "
          f"{nbytes / 1e6:9.1f} MB hashed ({nbytes / 1e6 / seconds if seconds else 0:6.0f} MB/s) | "
          f"verify/run = {share:6.2%}{'' if ok else '  (RUN FAILED)'}", flush=True)
    return {"wall": wall, "verify": seconds, "share": share, "ok": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=0, help="raw_docs + cleaned_chunks on a landing of this many MB")
    ap.add_argument("--debug", action="store_true", help="full_pipeline with configs/debug.yaml on the sample corpus")
    args = ap.parse_args()
    if not args.mb and not args.debug:
        ap.error("give --mb N and/or --debug")

    home = Path(tempfile.mkdtemp(prefix="bench-integrity-")) / "lh"
    (home / "landing").mkdir(parents=True)
    (home / "dagster").mkdir()
    os.environ["LINEAGE_HOME"], os.environ["DAGSTER_HOME"] = str(home), str(home / "dagster")
    import dagster as dg
    import yaml

    timer = VerifyTimer()
    results = {}
    if args.mb:
        from assets import cleaned_chunks, raw_docs
        from bench.curation_corpus import build_corpus  # the corpus of the 100 MB curation bench (distinct docs, near copies)
        from resources import ArtifactStoreResource, CatalogResource, LandingZone

        info = build_corpus(home / "landing", args.mb)
        print(f"landing: {args.mb:g} MB ({home}): {info}", flush=True)
        res = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}
        with dg.instance_for_test() as instance:
            def mat():
                return dg.materialize([raw_docs, cleaned_chunks], instance=instance, resources=res).success

            results["mb_build"] = run(f"{args.mb:g} MB: build (2 assets)", mat, timer)
            results["mb_hits"] = run(f"{args.mb:g} MB: rerun (2 cache hits)", mat, timer)
    if args.debug:
        from definitions import defs
        from ml.sample_corpus import write_sample_corpus

        landing = home / "landing_debug"
        write_sample_corpus(landing)
        os.environ["LINEAGE_HOME"] = str(home.parent / "lh_debug")
        Path(os.environ["LINEAGE_HOME"]).mkdir()
        os.replace(landing, Path(os.environ["LINEAGE_HOME"]) / "landing")
        profile = yaml.safe_load((ROOT / "configs" / "debug.yaml").read_text())
        job = defs.resolve_job_def("full_pipeline")
        with dg.instance_for_test() as instance:
            def mat():
                return job.execute_in_process(run_config=profile, instance=instance, raise_on_error=False).success

            results["debug_build"] = run("debug full_pipeline: build", mat, timer)
            results["debug_hits"] = run("debug full_pipeline: rerun (hits)", mat, timer)
    builds = [r for k, r in results.items() if k.endswith("build")]
    worst = max(r["share"] for r in builds)
    print(f"worst verify/run on a run that builds: {worst:.2%} (goal <= 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
