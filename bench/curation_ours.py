"""Our raw_docs + cleaned_chunks over a landing directory, through the stored units, for bench/curation.py.

    .venv/bin/python bench/curation_ours.py LANDING HOME THRESHOLD WORKERS [cold-merge]   (prints one JSON line)

The same ml calls as the assets' steps (ml/curation_units.py): one ``ingest_unit`` per landing file
and one ``curate_unit`` per raw unit, each on a pool of ``WORKERS`` processes (the unit steps the
multiprocess executor runs side by side), then the raw_docs assembly and the cleaned_chunks merge +
assembly in this process (the small steps). ``HOME`` is the store: a second call on the same
``HOME`` after a landing file was added is the incremental run (stored units, parts and index are
reused); with ``cold-merge`` the stored per-unit work is reused but every unit is merged again
from an empty dedup index (the cold answer to compare an incremental run with). Times are measured from the first unit to the published cleaned_chunks version; the memory
of the process tree is measured by the caller (bench/measure.py), ``ru_maxrss`` here is this
process's own peak and ``children_maxrss_mb`` the largest worker's.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ingest(args) -> str:
    import ml.curation_units as cu
    from ml.raw_docs import IngestConfig
    from ml.store import ArtifactStore

    home, lf = args
    return cu.ingest_unit(ArtifactStore(home), lf, IngestConfig()).data_version


def _curate(args) -> str:
    import ml.curation_units as cu
    from ml.store import ArtifactStore

    home, raw_version, unit, cfg = args
    store = ArtifactStore(home)
    return cu.curate_unit(store, lambda: store.get("raw_docs", raw_version), unit, cfg).data_version


def run(landing: Path, home: Path, threshold: float, workers: int, cold_merge: bool = False) -> dict:
    import ml.curation_units as cu
    from ml.cleaned_chunks.pipeline import CurationConfig
    from ml.fsutil import digest_json
    from ml.raw_docs import IngestConfig, scan_landing, slice_files
    from ml.store import ArtifactStore, BuildResult

    cfg = CurationConfig(jaccard_threshold=threshold, threads=1)  # the pool keeps the cores busy
    store = ArtifactStore(home)
    res: dict = {}
    t0 = time.perf_counter()
    files = slice_files(scan_landing(landing, home / "work" / "landing_digests.json"), IngestConfig().slice_bytes)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        raw_units = list(pool.map(_ingest, [(home, f) for f in files]))
        t1 = time.perf_counter()
        report: dict = {}

        def build_raw(out: Path) -> BuildResult:
            report["raw"] = cu.assemble_raw(store, files, raw_units, out)
            return BuildResult(stats=report["raw"].stats())

        raw = store.lookup("raw_docs", digest_json(raw_units)) or store.put(
            "raw_docs", build_raw, fingerprint=digest_json(raw_units), code_version="bench", config={}, upstream={})
        t2 = time.perf_counter()
        plan = cu.plan_units(raw)
        cunits = list(pool.map(_curate, [(home, raw.data_version, u, cfg) for u in plan]))
    t3 = time.perf_counter()

    def build_clean(out: Path) -> BuildResult:
        report["clean"] = cu.merge_and_assemble(store, cunits, cfg, out, reuse_prefix=not cold_merge)
        return BuildResult(stats=report["clean"].stats())

    clean = store.put("cleaned_chunks", build_clean, fingerprint=digest_json([raw.data_version, cunits, cold_merge]),
                      code_version="bench", config={}, upstream={})
    t4 = time.perf_counter()
    s = report["clean"].stats()
    res.update(units_s=t1 - t0, assemble_raw_s=t2 - t1, curate_units_s=t3 - t2, merge_s=t4 - t3, total_s=t4 - t0,
               files=len(files), units_merged=int(s["lsh.units_merged"]), units_reused=int(s["lsh.units_reused"]),
               stats={k: v for k, v in s.items()}, raw=report["raw"].stats() if "raw" in report else raw.stats,
               raw_version=raw.data_version, raw_path=str(raw.path), clean_version=clean.data_version, clean_path=str(clean.path),
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               children_maxrss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return res


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
                         cold_merge=sys.argv[5:] == ["cold-merge"])))
