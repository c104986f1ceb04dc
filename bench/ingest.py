"""raw_docs ingest throughput against polars.read_ndjson on the same bytes, in one run.

    python bench/ingest.py [--mb 100]

The baseline parses the same JSONL with polars' native reader (no validation,
no quarantine, no doc ids, everything in memory). The corpus is clean because
polars.read_ndjson fails the whole file on a single malformed line (even with
ignore_errors=True), which is the reason raw_docs exists. Ours streams line by line,
validates each line, computes doc ids, deduplicates and writes Parquet parts.
Prints docs/s, MB/s, peak RSS of each (in a fresh subprocess) and ours/theirs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_corpus(path: Path, mb: int) -> int:
    from ml.sample_corpus import build_sample_corpus

    docs = [d for ds in build_sample_corpus().values() for d in ds]
    target, n, size = mb * 1_000_000, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            d = docs[n % len(docs)]
            line = json.dumps({"title": d["title"], "content": d["content"], "url": f"{d['url']}?copy={n}"},
                              ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode())
            n += 1
    return n


def run_ours(landing: str, out: str) -> dict:
    from ml.raw_docs import ingest, scan_landing

    t = time.perf_counter()
    report = ingest(scan_landing(Path(landing)), Path(out))
    return {"seconds": time.perf_counter() - t, "kept": report.kept, "quarantined": report.quarantined}


def run_theirs(landing: str, out: str) -> dict:
    import polars as pl

    t = time.perf_counter()
    frames = []
    for p in sorted(Path(landing).glob("*.jsonl")):
        frames.append(pl.read_ndjson(p))
    df = pl.concat(frames)
    df.write_parquet(Path(out) / "docs.parquet")
    return {"seconds": time.perf_counter() - t, "kept": df.height, "quarantined": None}


def child(which: str, landing: str, out: str) -> None:
    res = (run_ours if which == "ours" else run_theirs)(landing, out)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        landing.mkdir()
        lines = make_corpus(landing / "corpus.jsonl", args.mb)
        mb = (landing / "corpus.jsonl").stat().st_size / 1e6
        results = {}
        for which in ("theirs", "ours"):
            out = Path(tmp) / which
            out.mkdir()
            proc = subprocess.run([sys.executable, __file__, "--child", which, str(landing), str(out)],
                                  capture_output=True, text=True, check=True)
            results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"corpus: {lines} lines, {mb:.1f} MB")
        for which, label in (("theirs", "polars.read_ndjson (baseline)"), ("ours", "raw_docs ingest")):
            r = results[which]
            print(f"{label:32s} {r['seconds']:7.2f} s  {lines / r['seconds']:10.0f} lines/s  "
                  f"{mb / r['seconds']:7.1f} MB/s  peak RSS {r['peak_rss_mb']:7.0f} MB  kept {r['kept']}")
        ratio = results["theirs"]["seconds"] / results["ours"]["seconds"]
        print(f"throughput ours/theirs: {ratio:.2f}  (peak RSS ours/theirs: "
              f"{results['ours']['peak_rss_mb'] / results['theirs']['peak_rss_mb']:.2f})")


if __name__ == "__main__":
    main()
