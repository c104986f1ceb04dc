"""datatrove's curation of the same corpus, for bench/curation.py's throughput ratio (runs in its own venv).

datatrove 0.10.1 in ``.bench-venv`` (created and filled by ``ensure_datatrove_venv`` if missing;
the project venv is never touched): JsonlReader -> GopherRepetitionFilter -> GopherQualityFilter ->
JsonlWriter -> MinhashDedupSignature, then MinhashDedupBuckets, MinhashDedupCluster, and
JsonlReader -> MinhashDedupFilter -> JsonlWriter, each stage a LocalPipelineExecutor with
``workers`` processes where the stage allows (the cluster stage is one task by design).
MinhashConfig: datatrove's defaults (5-gram shingles of its normalised text, 14 buckets x 8 hashes
= 112 permutations; a shared bucket removes a document, there is no Jaccard check). Word tokenizer:
datatrove assigns English to its SpaCyTokenizer, ``spacy.blank("en")`` + a rule-based sentencizer:
no model download and no NLTK data.

    <bench venv>/bin/python bench/curation_datatrove.py LANDING WORK WORKERS   (prints one JSON line)
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time
from pathlib import Path

DATATROVE_REQS = ("datatrove==0.10.1", "xxhash<4", "orjson", "spacy", "regex", "tokenizers")
DATATROVE_VERSION = "0.10.1"


def run_datatrove(landing: Path, work: Path, workers: int) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    tok = load_word_tokenizer("en")  # what the Gopher filters and MinHash use for English
    tokenizer = f"{type(tok).__name__}({getattr(tok, 'language', '')})"
    tok.word_tokenize("Offline check: spacy.blank needs no model.")  # fails here if a download were needed

    n_tasks = len(sorted(landing.glob("*.jsonl")))
    cfg = MinhashConfig()  # datatrove's defaults: 5-grams, 14 buckets x 8 hashes, 64-bit xxhash
    d = {k: work / k for k in ("filtered", "sigs", "buckets", "remove_ids", "deduped", "logs")}
    stages = {
        "read+gopher+signature": LocalPipelineExecutor(pipeline=[
            JsonlReader(str(landing), glob_pattern="*.jsonl", text_key="content", id_key="url"),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            JsonlWriter(str(d["filtered"]), output_filename="${rank}.jsonl", compression=None),
            MinhashDedupSignature(output_folder=str(d["sigs"]), config=cfg),
        ], tasks=n_tasks, workers=workers, logging_dir=str(d["logs"] / "1")),
        "buckets": LocalPipelineExecutor(pipeline=[
            MinhashDedupBuckets(input_folder=str(d["sigs"]), output_folder=str(d["buckets"]), config=cfg),
        ], tasks=cfg.num_buckets, workers=workers, logging_dir=str(d["logs"] / "2")),
        "cluster": LocalPipelineExecutor(pipeline=[
            MinhashDedupCluster(input_folder=str(d["buckets"]), output_folder=str(d["remove_ids"]), config=cfg),
        ], tasks=1, workers=1, logging_dir=str(d["logs"] / "3")),
        "filter+write": LocalPipelineExecutor(pipeline=[
            JsonlReader(str(d["filtered"]), glob_pattern="*.jsonl"),
            MinhashDedupFilter(input_folder=str(d["remove_ids"])),
            JsonlWriter(str(d["deduped"]), output_filename="${rank}.jsonl", compression=None),
        ], tasks=n_tasks, workers=workers, logging_dir=str(d["logs"] / "4")),
    }
    times = {}
    t0 = time.perf_counter()
    for name, ex in stages.items():
        t = time.perf_counter()
        ex.run()
        times[name] = time.perf_counter() - t
    total = time.perf_counter() - t0

    def lines(folder: Path) -> int:
        n = 0
        for p in folder.glob("*.jsonl"):
            with open(p, "rb") as f:
                n += sum(1 for _ in f)
        return n

    reasons: dict[str, int] = {}
    for step in json.loads((d["logs"] / "1" / "stats.json").read_text()):
        for k, v in step.get("stats", {}).items():
            if k.startswith("dropped_"):
                reasons[f"{step['name'].split()[-1].lower()}.{k[8:]}"] = v.get("total", v) if isinstance(v, dict) else v
    after_filters, kept = lines(d["filtered"]), lines(d["deduped"])

    def ids(folder: Path) -> set[str]:
        out = set()
        for p in folder.glob("*.jsonl"):
            with open(p, encoding="utf-8") as f:
                out.update(json.loads(line)["id"] for line in f)
        return out

    passed, survived = ids(d["filtered"]), ids(d["deduped"])
    status = {u: ("kept" if u in survived else "dedup") for u in passed if "/near_copy/" in u or "/unique/" in u}
    print(json.dumps({"total_s": total, "stages": times, "after_filters": after_filters, "kept": kept,
                      "pair_status": status,
                      "tokenizer": tokenizer, "tasks": n_tasks, "reasons": reasons,
                      "datatrove": importlib.metadata.version("datatrove")}))


def ensure_datatrove_venv(venv: Path) -> Path:
    """Create venv (if missing) and install datatrove into it with that venv's own pip."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import datatrove.pipeline.dedup, datatrove.pipeline.filters, spacy, xxhash, orjson, regex; "
             "import importlib.metadata as m; "
             "print(m.version('datatrove'))"]
    if py.exists():
        r = subprocess.run(check, capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == DATATROVE_VERSION:
            return py
    print(f"installing {' '.join(DATATROVE_REQS)} into {venv} (never into the project venv) ...", flush=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    if not py.exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", *DATATROVE_REQS],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"pip install into {venv} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    subprocess.run(check, check=True, capture_output=True)
    return py



if __name__ == "__main__":
    run_datatrove(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
