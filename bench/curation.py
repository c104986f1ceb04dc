"""cleaned_chunks at corpus scale: cold wall time and peak memory, a +1% landing, and datatrove, in one run.

    .venv/bin/python bench/curation.py [--mb 1000] [--corpus DIR] [--increment-pct 1] [--slice-mb 100]
                                       [--skip-datatrove] [--workers 2] [--seed 0] [--keep]

1. Corpus: ``--mb`` MB of generated JSONL (bench/curation_corpus.py: real English sentences, ~5 %
   exact and ~5 % near copies, short and noisy documents), or the ``*.jsonl`` of ``--corpus DIR``.
2. Cold: raw_docs + cleaned_chunks through the stored units in a fresh store (bench/curation_ours.py:
   unit work on ``--workers`` processes, then the assembly and the dedup merge). Wall time and the
   peak memory of the whole process tree (bench/measure.py: summed PSS, and summed RSS).
3. Incremental: one more landing file of ``--increment-pct`` % of the corpus (new documents, and
   exact and near copies of earlier ones), the same store: only the new unit is computed and merged.
   Its wall time as a ratio of the cold one (goal <= 5 %).
4. The same files merged cold: every stored unit merged again from an empty dedup index (the
   per-unit work is content-addressed, so reusing it gives the same bytes; ``--fresh-cold`` computes
   every unit again in a fresh store instead); every decision (doc_id, decision, reason,
   duplicate_of, similarity) of the incremental version compared with it: they must be equal.
5. datatrove 0.10.1 (bench/curation_datatrove.py, its own venv) and ours cold, both on a
   ``--slice-mb`` MB slice (the first corpus files): the throughput ratio, and the near-dup quality
   of both per band of measured exact Jaccard.

Times are wall seconds of the child processes (interpreter start included for both pipelines).
MB = 10^6 bytes of input JSONL. Ours does more than datatrove: text cleaning, exact dedup, C4 rules,
an exact Jaccard check of every LSH candidate pair, chunking, one decision row per input document,
and content-addressed versions (every file hashed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from curation_corpus import band_rates, build_corpus, build_increment, dedup_bands, describe_corpus, near_copy_pairs  # noqa: E402
from curation_datatrove import ensure_datatrove_venv  # noqa: E402
from measure import run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
GOAL_RATIO = 5.0  # ours / datatrove throughput
GOAL_INCREMENTAL = 0.05  # incremental / cold wall time for a +1 % landing
GOAL_RSS_MB_PER_GB = 2048


def ours(py: str, landing: Path, home: Path, log: Path, threshold: float, workers: int, *extra: str) -> dict:
    return run_measured([py, str(HERE / "curation_ours.py"), str(landing), str(home), str(threshold), str(workers),
                         *extra], log)


def mem(r: dict) -> str:
    return (f"peak tree PSS {r['tree_peak_pss_mb']:6.0f} MB (sum RSS {r['tree_peak_rss_mb']:.0f} MB over "
            f"{r['tree_max_procs']} processes; largest worker {r['children_maxrss_mb']:.0f} MB)")


def line(label: str, r: dict, docs: int, mb: float) -> str:
    s = r["wall_process"]
    return f"{label:30s} {s:8.1f} s {docs / s:8.0f} docs/s {mb / s:6.2f} MB/s   {mem(r)}"


def same_decisions(a: str, b: str) -> tuple[bool, int, int]:
    import polars as pl

    da = pl.read_parquet(Path(a) / "decisions" / "*.parquet")
    db = pl.read_parquet(Path(b) / "decisions" / "*.parquet")
    return da.equals(db), da.height, (da.join(db, on=da.columns, how="anti").height if da.columns == db.columns else -1)


def report_bands(pairs, cols: list[tuple[str, dict]], threshold: float) -> None:
    head = "".join(f" | {name + ' removed':>22s}" for name, _ in cols)
    print(f"  {'exact Jaccard':16s} {'goal':>10s}{head}")
    rates = [(name, band_rates(pairs, status, threshold)) for name, status in cols]
    for band, _, _, kind in dedup_bands(threshold):
        goal = {"recall": ">= 0.97" if band.startswith("[") else ">= 0.99",
                "removed": "<= 0.03" if band.startswith("[") else "<= 0.005"}[kind]
        cells = "".join(f" | {r[band][1] / max(r[band][0], 1):7.3f} ({r[band][1]:4d}/{r[band][0]:4d})" for _, r in rates)
        print(f"  {band:16s} {goal:>10s}{cells}")
    print("  (a pair counts when both documents passed that pipeline's quality filters; removed = the copy or the "
          "original removed by dedup)")


def pair_status(run: dict) -> dict[str, str]:
    """url -> 'kept' / 'dedup' / 'other' of the near copies and originals in one of our runs."""
    import polars as pl

    docs = pl.scan_parquet(Path(run["raw_path"]) / "docs" / "*.parquet")
    dec = pl.scan_parquet(Path(run["clean_path"]) / "decisions" / "*.parquet")
    st = (docs.select("doc_id", "url").filter(pl.col("url").str.contains("/near_copy/|/unique/")).unique("doc_id")
          .join(dec.select("doc_id", "decision"), on="doc_id")
          .select("url", pl.col("decision").replace_strict(
              {"kept": "kept", "near_duplicate": "dedup", "exact_duplicate": "dedup"}, default="other"))
          .collect())
    return dict(zip(st["url"], st["decision"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=1000, help="corpus size to build, MB of JSONL (default 1000)")
    ap.add_argument("--corpus", type=Path, help="existing landing dir of *.jsonl to use instead of building one")
    ap.add_argument("--increment-pct", type=float, default=1.0, help="size of the added landing file, %% of the corpus")
    ap.add_argument("--slice-mb", type=float, default=100, help="MB of the corpus datatrove and ours run on (default 100)")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--skip-incremental", action="store_true")
    ap.add_argument("--fresh-cold", action="store_true",
                    help="compare the incremental decisions with a cold run in a fresh store (every unit computed "
                         "again) instead of a cold merge of the stored units from an empty index")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--datatrove-venv", type=Path, default=ROOT / ".bench-venv")
    ap.add_argument("--workers", type=int, default=2, help="worker processes, ours and datatrove (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jaccard-threshold", type=float, default=0.8)
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python")
                    if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable)
    args = ap.parse_args()
    t_ = args.jaccard_threshold
    dt_py = None if args.skip_datatrove else ensure_datatrove_venv(args.datatrove_venv.resolve())
    tmp = Path(tempfile.mkdtemp(prefix="bench-curation-"))
    failed = False
    try:
        landing = tmp / "landing"
        if args.corpus:
            landing.mkdir()
            for p in sorted(args.corpus.resolve().glob("*.jsonl")):
                os.link(p, landing / p.name) if p.stat().st_dev == landing.stat().st_dev else shutil.copy(p, landing)
            corpus, build_s = describe_corpus(landing), 0.0
        else:
            t = time.perf_counter()
            corpus = build_corpus(landing, args.mb, args.seed)
            build_s = time.perf_counter() - t
        mb, docs = corpus["bytes"] / 1e6, corpus["docs"]
        print(f"corpus: {docs} docs, {mb:.1f} MB JSONL in {corpus['files']} files"
              + (f", built in {build_s:.1f} s" if build_s else ""), flush=True)

        cold = ours(args.python, landing, tmp / "store", tmp / "cold.log", t_, args.workers)
        if "error" in cold:
            sys.exit(f"ours cold FAILED: {cold['error']}")
        s = cold["stats"]
        print(line("ours cold (ingest + curate)", cold, docs, mb))
        print(f"{'':30s} = unit ingest {cold['units_s']:.1f} s + raw assembly {cold['assemble_raw_s']:.1f} s + "
              f"unit curation {cold['curate_units_s']:.1f} s + merge and assembly {cold['merge_s']:.1f} s")
        print(f"{'':30s} kept {int(s['docs.kept'])}, exact dup {int(s['docs.exact_duplicate'])}, near dup "
              f"{int(s['docs.near_duplicate'])}, filtered {int(s['docs.filtered'])}; {int(s['chunks'])} chunks; "
              f"raw quarantine {cold['raw']['quarantined']}", flush=True)
        if mb >= 900:
            print(f"{'':30s} peak tree PSS {cold['tree_peak_pss_mb']:.0f} MB for {mb:.0f} MB of input "
                  f"(goal <= {GOAL_RSS_MB_PER_GB} MB for 1 GB: "
                  f"{'met' if cold['tree_peak_pss_mb'] <= GOAL_RSS_MB_PER_GB else 'NOT met'})", flush=True)

        if not args.skip_incremental:
            inc_mb = mb * args.increment_pct / 100
            added = build_increment(landing, "zz-increment.jsonl", inc_mb, args.seed + 1)
            print(f"\n+{args.increment_pct:g}% landing: {added['bytes'] / 1e6:.1f} MB ({added['docs']} new documents "
                  f"+ {added['copies_of_earlier']} copies of earlier ones)", flush=True)
            inc = ours(args.python, landing, tmp / "store", tmp / "inc.log", t_, args.workers)
            if "error" in inc:
                sys.exit(f"ours incremental FAILED: {inc['error']}")
            ratio = inc["wall_process"] / cold["wall_process"]
            print(line("ours incremental", inc, added["docs"] + added["copies_of_earlier"], added["bytes"] / 1e6))
            print(f"{'':30s} units merged {inc['units_merged']}, reused {inc['units_reused']}; unit work "
                  f"{inc['units_s'] + inc['curate_units_s']:.1f} s, raw assembly {inc['assemble_raw_s']:.1f} s, "
                  f"merge and assembly {inc['merge_s']:.1f} s")
            print(f"incremental / cold = {ratio:.3f} (goal <= {GOAL_INCREMENTAL:.2f}: "
                  f"{'met' if ratio <= GOAL_INCREMENTAL else 'NOT met'})", flush=True)
            if args.fresh_cold:  # every unit computed again in a fresh store
                full = ours(args.python, landing, tmp / "store_cold_all", tmp / "cold_all.log", t_, args.workers)
            else:  # the stored per-unit work (content-addressed: the same bytes), merged from an empty index
                full = ours(args.python, landing, tmp / "store", tmp / "cold_all.log", t_, args.workers, "cold-merge")
            if "error" in full:
                sys.exit(f"ours cold over every file FAILED: {full['error']}")
            equal, n, differ = same_decisions(inc["clean_path"], full["clean_path"])
            print(line("ours cold" + (", same files" if args.fresh_cold else " merge of every unit"), full,
                       docs + added["docs"] + added["copies_of_earlier"], mb + added["bytes"] / 1e6))
            print(f"decisions incremental vs cold: {n} documents, {'EQUAL' if equal else f'{differ} DIFFER'}; "
                  f"versions {inc['clean_version']} / {full['clean_version']}", flush=True)
            failed |= not equal

        if dt_py:
            slice_dir = tmp / "slice"
            slice_dir.mkdir()
            total = 0
            for p in sorted(landing.glob("part-*.jsonl")):
                if total >= args.slice_mb * 1e6:
                    break
                os.link(p, slice_dir / p.name)
                total += p.stat().st_size
            sl = describe_corpus(slice_dir)
            smb = sl["bytes"] / 1e6
            print(f"\nslice: {sl['docs']} docs, {smb:.1f} MB in {sl['files']} files", flush=True)
            if sl["files"] == corpus["files"] and args.skip_incremental:
                ours_s = cold  # the slice is the whole corpus: the cold run above
            else:
                ours_s = ours(args.python, slice_dir, tmp / "store_slice", tmp / "slice.log", t_, args.workers)
            theirs = run_measured([str(dt_py), str(HERE / "curation_datatrove.py"), str(slice_dir), str(tmp / "dt"),
                                   str(args.workers)], tmp / "datatrove.log")
            for name, r in (("ours", ours_s), ("datatrove", theirs)):
                if "error" in r:
                    failed = True
                    print(f"{name} on the slice FAILED: {r['error']}")
            if "error" not in ours_s and "error" not in theirs:
                print(line("ours cold (ingest + curate)", ours_s, sl["docs"], smb))
                w = theirs["wall_process"]
                print(f"{'datatrove ' + theirs['datatrove']:30s} {w:8.1f} s {sl['docs'] / w:8.0f} docs/s "
                      f"{smb / w:6.2f} MB/s   peak tree PSS {theirs['tree_peak_pss_mb']:6.0f} MB (sum RSS "
                      f"{theirs['tree_peak_rss_mb']:.0f} MB over {theirs['tree_max_procs']} processes)")
                print(f"{'':30s} = " + " + ".join(f"{k} {v:.1f} s" for k, v in theirs["stages"].items()))
                print(f"{'':30s} kept {theirs['kept']}, removed by dedup {theirs['after_filters'] - theirs['kept']}, "
                      f"by filters {sl['docs'] - theirs['after_filters']}")
                r = w / ours_s["wall_process"]
                print(f"throughput ours / datatrove = {r:.2f} (goal >= {GOAL_RATIO:.0f}: {'met' if r >= GOAL_RATIO else 'NOT met'})")
                if not args.corpus:
                    pairs = near_copy_pairs(slice_dir)
                    print(f"\nnear-dup quality on the slice: {len(pairs)} near copies")
                    report_bands(pairs, [("ours", pair_status(ours_s)),
                                         ("datatrove", theirs["pair_status"])], t_)
    finally:
        if args.keep or failed:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
