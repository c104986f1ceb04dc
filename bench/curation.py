"""cleaned_chunks curation throughput and memory against datatrove, on the same corpus, in one run.

    .venv/bin/python bench/curation.py [--mb 100] [--corpus DIR] [--skip-datatrove] [--keep]
                                       [--datatrove-venv .bench-venv] [--workers 2] [--seed 0]
                                       [--jaccard-threshold 0.8]

Corpus (unless ``--corpus DIR`` names an existing landing directory of ``*.jsonl``):
``--mb`` MB of JSONL (title / content / url), built deterministically (seeded RNG) from
the embedded sample corpus (``ml.sample_corpus``, ~3,100 docs of real English text): each
synthetic document strings together 3-12 paragraphs, each paragraph a run of 2-7
consecutive prose sentences of a different random source document, so documents are
unique and almost all long enough for Gopher's 50-word minimum. "Prose" drops the
code-like sentences (doctest lines, signatures) whose punctuation tokens would make
datatrove's spaCy-token alpha-words rule drop most documents while ours (whitespace
words) keeps them: both pipelines then do comparable work. Mixed in: ~5 % exact copies
(new url) and ~5 % near copies of earlier documents, ~3 % short (1-2 sentence) documents
and ~2 % "noisy" ones built from all sentences, code-like included, so dedup and the
filters have work. A near copy gets as many random word edits (substitutions, deletions,
insertions) as a Jaccard drawn uniformly from [0.4, 1.0) needs; its url names its
original (``.../near_copy/<n>/of/<m>``). Written as >= 4 files (about 50 MB each for big
corpora) so datatrove's JsonlReader can shard them over its tasks. ``--corpus`` takes the
top-level ``*.jsonl`` files of DIR; datatrove runs one task per file.

Near-dup quality (built corpus only): every near copy's exact Jaccard with its original is
measured on the input content with the stage's definition (5-word shingles of the
lower-cased, whitespace-split text, as sets), and the pairs are binned: [0.80, 0.85],
>= 0.85, [0.70, 0.78], <= 0.6 (bands shift with ``--jaccard-threshold``). A pair counts
when both documents passed each pipeline's quality filters; it is "removed" when the
copy or the original was removed by dedup. Printed per band for ours and datatrove. The
truth is measured on the raw content, the same input for both pipelines; ours decides on
the cleaned text, so a pair whose cleaning dropped a line (a C4 rule) can sit on the
other side of the threshold there.

Ours (project venv, fresh subprocesses):
  (b) ``ingest`` (JSONL -> raw_docs Parquet) + ``curate`` (-> decisions, docs, chunks);
  (a) ``curate`` alone from the raw_docs parts that (b) wrote, in another fresh process.
  Peak memory: ``ru_maxrss`` of the process (RUSAGE_SELF; ours is one process).

Theirs (datatrove 0.10.1 in its own venv, created and filled by this script if missing;
the project venv is never touched): JsonlReader -> GopherRepetitionFilter ->
GopherQualityFilter -> JsonlWriter -> MinhashDedupSignature, then MinhashDedupBuckets,
MinhashDedupCluster, and JsonlReader -> MinhashDedupFilter -> JsonlWriter, each stage a
LocalPipelineExecutor with ``--workers`` (2) processes where the stage allows (the
cluster stage is one task by design). MinhashConfig: datatrove's defaults (5-gram
shingles of its normalised text, 14 buckets x 8 hashes = 112 permutations; a shared
bucket removes a document, there is no Jaccard check). Ours: 128 permutations of which
LSH uses 25 bands x 5 rows for Jaccard 0.8, and exact Jaccard of every candidate pair
decides. Word tokenizer: datatrove assigns English to its SpaCyTokenizer, which
is ``spacy.blank("en")`` + a rule-based sentencizer: no model download and no NLTK data.
Peak memory: datatrove forks (a multiprocess Manager, a forkserver and its pool workers),
so the benchmark polls /proc every 0.1 s and sums the memory of the whole process tree;
it prints the peak of the summed PSS (shared pages split between the processes sharing
them: the honest total) and of the summed RSS (counts shared pages once per process: an
upper bound). The same polling is done for ours, next to its exact ru_maxrss.

Times are measured inside each child from its first pipeline call to its end (interpreter
start and top-level imports excluded, for both; datatrove's worker processes importing
datatrove/spaCy are part of its run). MB = 10^6 bytes of input JSONL for every line.
The headline ratio compares the same work from the same JSONL: ours (b) over datatrove.
Ours does more than datatrove here: text cleaning, exact dedup, C4 rules, a Jaccard check
of every LSH candidate pair, chunking, and writing decisions for every input document.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATATROVE_REQS = ("datatrove==0.10.1", "xxhash<4", "orjson", "spacy", "regex", "tokenizers")
DATATROVE_VERSION = "0.10.1"
GOAL_RATIO = 5.0
GOAL_GB_RSS_MB = 4096


# ---- corpus --------------------------------------------------------------------------------
URL = "https://corpus.bench.invalid"
NEAR_COPY_URL = re.compile(re.escape(URL) + r"/near_copy/\d+/of/(\d+)$")
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def _prose(sentence: str) -> bool:
    """At least 80 % of its word-or-punctuation tokens hold a letter (spaCy-like tokens: the
    Gopher alpha-words rule as datatrove counts it), i.e. English prose rather than code."""
    toks = _TOKEN.findall(sentence)
    return bool(toks) and sum(any(c.isalpha() for c in t) for t in toks) >= 0.8 * len(toks)


def _sources() -> tuple[list, list]:
    """(title, sentences) of every sample-corpus document, paragraphs unwrapped to one line:
    (prose sentences only, all sentences)."""
    sys.path.insert(0, str(ROOT))
    from ml.sample_corpus import build_sample_corpus

    prose, every = [], []
    for docs in build_sample_corpus().values():
        for d in docs:
            sents = []
            for para in re.split(r"\n\s*\n", d["content"]):
                para = " ".join(para.split())
                if para:
                    sents.extend(s for s in _SENT_SPLIT.split(para) if s)
            if sents:
                every.append((d["title"], sents))
            if sents := [s for s in sents if _prose(s)]:
                prose.append((d["title"], sents))
    return prose, every


def _compose(rng: random.Random, sources, n_paras: int, run: tuple[int, int]) -> tuple[str, str]:
    picks = rng.sample(range(len(sources)), n_paras)
    paras = []
    for i in picks:
        sents = sources[i][1]
        k = rng.randint(*run)
        if len(sents) > k:
            s = rng.randrange(len(sents) - k + 1)
            sents = sents[s:s + k]
        paras.append(" ".join(sents))
    return sources[picks[0]][0], "\n\n".join(paras)


def _near_copy(rng: random.Random, content: str, vocab: list[str], target: float) -> str:
    """content with as many random word edits as a Jaccard of about ``target`` needs: a
    share 2J/(1+J) of the 5-word shingles must survive, so a share 1 - (2J/(1+J))^(1/5) of
    the words is edited."""
    paras = content.split("\n\n")
    n_words = sum(p.count(" ") + 1 for p in paras)
    keep = 2 * target / (1 + target)
    for _ in range(max(1, round(n_words * (1 - keep ** (1 / 5))))):
        p = rng.randrange(len(paras))
        words = paras[p].split(" ")
        j = rng.randrange(len(words))
        op = rng.random()
        if op < 0.5:
            words[j] = rng.choice(vocab)
        elif op < 0.75 and len(words) > 1:
            del words[j]
        else:
            words.insert(j, rng.choice(vocab))
        paras[p] = " ".join(words)
    return "\n\n".join(paras)


def build_corpus(landing: Path, mb: float, seed: int = 0) -> dict:
    """Write ~mb MB of JSONL into landing/part-NNN.jsonl; returns what was written."""
    sources, every = _sources()
    rng = random.Random(seed)
    vocab = sorted({w for _, sents in sources[:300] for s in sents for w in s.split() if w.isalpha()})
    target = int(mb * 1_000_000)
    n_files = max(4, 2 * -(-int(mb) // 100))  # >= 4, and about 50 MB per file for big corpora
    per_file = target / n_files
    landing.mkdir(parents=True, exist_ok=True)
    pool: list[tuple[str, str, int]] = []  # reservoir of earlier originals (title, content, n) to copy from
    seen = 0
    counts = {"unique": 0, "exact_copy": 0, "near_copy": 0, "short": 0, "noisy": 0}
    written, n, f_idx = 0, 0, 0
    f = open(landing / f"part-{f_idx:03d}.jsonl", "w", encoding="utf-8")
    while written < target:
        r = rng.random()
        url = None
        if pool and r < 0.05:
            title, content, _ = rng.choice(pool)
            kind = "exact_copy"
        elif pool and r < 0.10:
            title, content, of = rng.choice(pool)
            content = _near_copy(rng, content, vocab, rng.uniform(0.4, 1.0))
            kind = "near_copy"
            url = f"{URL}/near_copy/{n}/of/{of}"
        elif r < 0.13:
            title, content = _compose(rng, sources, 1, (1, 2))
            kind = "short"
        elif r < 0.15:  # any sentence, code-like ones included: food for the quality rules
            title, content = _compose(rng, every, rng.randint(3, 12), (2, 7))
            kind = "noisy"
        else:
            title, content = _compose(rng, sources, rng.randint(3, 12), (2, 7))
            kind = "unique"
            seen += 1
            if len(pool) < 20_000:
                pool.append((title, content, n))
            elif (j := rng.randrange(seen)) < len(pool):
                pool[j] = (title, content, n)
        counts[kind] += 1
        line = json.dumps({"title": title, "content": content, "url": url or f"{URL}/{kind}/{n}"},
                          ensure_ascii=False) + "\n"
        f.write(line)
        written += len(line.encode("utf-8"))
        n += 1
        if written >= per_file * (f_idx + 1) and f_idx + 1 < n_files and written < target:
            f.close()
            f_idx += 1
            f = open(landing / f"part-{f_idx:03d}.jsonl", "w", encoding="utf-8")
    f.close()
    return {"docs": n, "bytes": written, "files": f_idx + 1, **counts}


def _shingle_set(text: str, n: int = 5) -> set:
    """The stage's Jaccard definition (README): 5-word shingles of the lower-cased, whitespace-split text."""
    w = text.lower().split()
    return {tuple(w)} if len(w) < n else {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def near_copy_pairs(landing: Path) -> list[tuple[str, str, float]]:
    """(copy url, original url, exact Jaccard of the two contents) of every near copy of a built corpus."""
    files = sorted(landing.glob("*.jsonl"))
    wanted: dict[str, list[tuple[str, str]]] = {}  # original url -> [(copy url, copy content)]
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if "/near_copy/" in line:
                    d = json.loads(line)
                    if m := NEAR_COPY_URL.match(d["url"]):
                        wanted.setdefault(f"{URL}/unique/{m.group(1)}", []).append((d["url"], d["content"]))
    out = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if "/unique/" in line:
                    d = json.loads(line)
                    for copy_url, content in wanted.get(d["url"], ()):
                        a, b = _shingle_set(d["content"]), _shingle_set(content)
                        out.append((copy_url, d["url"], len(a & b) / len(a | b)))
    return out


def dedup_bands(threshold: float) -> list[tuple[str, float, float, str]]:
    t = threshold
    return [(f"[{t:.2f}, {t + 0.05:.2f}]", t, t + 0.05, "recall"), (f">= {t + 0.05:.2f}", t + 0.05, 1.0, "recall"),
            (f"[{t - 0.10:.2f}, {t - 0.02:.2f}]", t - 0.10, t - 0.02, "removed"),
            (f"<= {t - 0.20:.2f}", 0.0, t - 0.20, "removed")]


def band_rates(pairs: list[tuple[str, str, float]], status: dict[str, str], threshold: float) -> dict[str, list]:
    """band -> [pairs counted, pairs removed]. status: url -> 'dedup' (removed by dedup), 'kept' or
    'other' (filtered / quarantined: the pair is not counted)."""
    out = {}
    for name, lo, hi, _ in dedup_bands(threshold):
        n = removed = 0
        for copy_url, orig_url, j in pairs:
            if lo <= j <= hi:
                a, b = status.get(copy_url, "other"), status.get(orig_url, "other")
                if a != "other" and b != "other":
                    n += 1
                    removed += "dedup" in (a, b)
        out[name] = [n, removed]
    return out


def describe_corpus(landing: Path) -> dict:
    files = sorted(landing.glob("*.jsonl"))
    docs = 0
    for p in files:
        with open(p, "rb") as f:
            docs += sum(1 for _ in f)
    return {"docs": docs, "bytes": sum(p.stat().st_size for p in files), "files": len(files)}


# ---- process-tree memory sampling -----------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _tree(pid: int) -> list[int]:
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def _rss_pss_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def run_measured(cmd: list[str], log: Path, interval: float = 0.1) -> dict:
    """Run cmd; returns its last stdout line as JSON plus the peak summed RSS/PSS of its process tree."""
    peak = {"rss": 0, "pss": 0, "procs": 0}
    with open(log, "w") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                tree = _tree(proc.pid)
                mem = [_rss_pss_kb(p) for p in tree]
                peak["rss"] = max(peak["rss"], sum(m[0] for m in mem))
                peak["pss"] = max(peak["pss"], sum(m[1] for m in mem))
                peak["procs"] = max(peak["procs"], len(tree))
                done.wait(interval)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        out, _ = proc.communicate()
        done.set()
        th.join()
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        return {"wall_process": wall, "error": f"exit {proc.returncode}; last lines of {log}:\n{tail}"}
    res = json.loads(out.strip().splitlines()[-1])
    res.update(wall_process=wall, tree_peak_rss_mb=peak["rss"] / 1024, tree_peak_pss_mb=peak["pss"] / 1024,
               tree_max_procs=peak["procs"])
    return res


# ---- ours (project venv) --------------------------------------------------------------------
def child_ours(mode: str, landing: Path, work: Path, threshold: float) -> None:
    sys.path.insert(0, str(ROOT))
    from ml.cleaned_chunks.pipeline import CurationConfig, curate
    from ml.raw_docs import IngestConfig, ingest, scan_landing

    raw = work / "raw_docs"
    res: dict = {}
    t0 = time.perf_counter()
    if mode == "full":
        irep = ingest(scan_landing(landing), raw, IngestConfig())
        res["ingest_s"] = time.perf_counter() - t0
        res["ingest"] = {"lines": irep.lines_read, "kept": irep.kept, "quarantined": irep.quarantined,
                         "reasons": {k: v for k, v in irep.reasons.items() if v}}
    parts = sorted((raw / "docs").glob("part-*.parquet"))
    t1 = time.perf_counter()
    out, tmp = work / f"out_{mode}", work / f"tmp_{mode}"
    for p in (out, tmp):
        shutil.rmtree(p, ignore_errors=True)
    report = curate(parts, out, tmp, CurationConfig(jaccard_threshold=threshold))
    t2 = time.perf_counter()
    res.update(curate_s=t2 - t1, total_s=t2 - t0, stats=report.stats(),
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if mode == "full":  # after the measurement: what happened to each near copy and its original
        import polars as pl
        from ml.cleaned_chunks.pipeline import read_decisions

        urls = pl.scan_parquet(parts).select("doc_id", "url").filter(
            pl.col("url").str.contains("/near_copy/|/unique/"))
        st = (urls.join(read_decisions(out).select("doc_id", "decision"), on="doc_id")
              .select("url", pl.col("decision").replace_strict(
                  {"kept": "kept", "near_duplicate": "dedup", "exact_duplicate": "dedup"}, default="other"))
              .collect())
        res["pair_status"] = dict(zip(st["url"], st["decision"]))
    print(json.dumps(res))


# ---- theirs (datatrove venv) ----------------------------------------------------------------
def child_datatrove(landing: Path, work: Path, workers: int) -> None:
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


# ---- main ------------------------------------------------------------------------------------
def _line(label: str, seconds: float, docs: int, mb: float, mem: str) -> str:
    return f"{label:34s} {seconds:8.2f} s {docs / seconds:9.0f} docs/s {mb / seconds:7.2f} MB/s   {mem}"


def report(res: dict, docs: int, mb: float, workers: int) -> None:
    ours_a, ours_b, theirs = res.get("ours (a)"), res.get("ours (b)"), res.get("datatrove")

    def mem_ours(r: dict) -> str:
        return f"peak RSS {r['peak_rss_mb']:6.0f} MB (ru_maxrss; tree PSS {r['tree_peak_pss_mb']:.0f} MB)"

    print(f"\n{'':34s} {'time':>10s} {'':>16s} {'(MB of input JSONL)':>14s}")
    if ours_a:
        print(_line("ours (a) curate only (parquet in)", ours_a["curate_s"], docs, mb, mem_ours(ours_a)))
    if ours_b:
        print(_line("ours (b) ingest + curate", ours_b["total_s"], docs, mb, mem_ours(ours_b))
              + f"\n{'':34s} = ingest {ours_b['ingest_s']:.2f} s + curate {ours_b['curate_s']:.2f} s")
    if theirs:
        stages = " + ".join(f"{k} {v:.2f} s" for k, v in theirs["stages"].items())
        print(_line(f"datatrove {theirs['datatrove']} ({workers} workers)", theirs["total_s"], docs, mb,
                    f"peak PSS {theirs['tree_peak_pss_mb']:6.0f} MB (sum over {theirs['tree_max_procs']} "
                    f"processes; sum RSS {theirs['tree_peak_rss_mb']:.0f} MB)")
              + f"\n{'':34s} = {stages}")

    print("\ndecisions")
    if ours_b:
        s, ing = ours_b["stats"], ours_b["ingest"]
        quarantine = f" {ing['reasons']}" if ing["reasons"] else ""
        print(f"  ours     : in {docs}, quarantined by ingest {ing['quarantined']}{quarantine}; "
              f"kept {s['docs.kept']}, removed by dedup {s['docs.exact_duplicate'] + s['docs.near_duplicate']} "
              f"(exact {s['docs.exact_duplicate']}, near {s['docs.near_duplicate']}), "
              f"removed by filters {s['docs.filtered']}; {s['chunks']} chunks")
        print("             filters: " + ", ".join(f"{k[9:]} {int(v)}" for k, v in s.items()
                                                 if k.startswith("filtered.")))
    if theirs:
        print(f"  datatrove: in {docs}; kept {theirs['kept']}, removed by dedup "
              f"{theirs['after_filters'] - theirs['kept']} (MinHash), removed by filters "
              f"{docs - theirs['after_filters']}; word tokenizer {theirs['tokenizer']}")
        print("             filters: " + ", ".join(f"{k} {v}" for k, v in sorted(theirs["reasons"].items())))
    if theirs and ours_b:
        ratio = theirs["total_s"] / ours_b["total_s"]
        print(f"\nthroughput ours/theirs = {ratio:.2f}   (ours (b) ingest+curate vs datatrove, same JSONL; "
              f"goal >= {GOAL_RATIO:.0f}: {'met' if ratio >= GOAL_RATIO else 'NOT met'})")
        print(f"  peak memory ours (b) / datatrove = {ours_b['peak_rss_mb'] / theirs['tree_peak_pss_mb']:.2f}"
              + (f"; curate alone vs datatrove = {theirs['total_s'] / ours_a['curate_s']:.2f}" if ours_a else ""))
    ours = [r["peak_rss_mb"] for r in (ours_a, ours_b) if r]
    if ours:
        peak = max(ours)
        print(f"\nours peak RSS {peak:.0f} MB for {mb:.0f} MB of input"
              + (f" (goal: < {GOAL_GB_RSS_MB} MB for 1 GB: {'met' if peak < GOAL_GB_RSS_MB else 'NOT met'})"
                 if mb >= 1000 else ""))


def report_bands(pairs: list[tuple[str, str, float]], res: dict, threshold: float) -> None:
    """Share of the near-copy pairs removed by dedup, per band of exact Jaccard, ours next to datatrove."""
    cols = [(name, band_rates(pairs, r["pair_status"], threshold)) for name, r in
            (("ours", res.get("ours (b)")), ("datatrove", res.get("datatrove"))) if r and "pair_status" in r]
    head = "".join(f" | {name + ' removed':>22s}" for name, _ in cols)
    print(f"  {'exact Jaccard':16s} {'goal':>10s}{head}")
    for band, _, _, kind in dedup_bands(threshold):
        goal = {"recall": ">= 0.97" if band.startswith("[") else ">= 0.99",
                "removed": "<= 0.03" if band.startswith("[") else "<= 0.005"}[kind]
        cells = "".join(f" | {rates[band][1] / max(rates[band][0], 1):7.3f} ({rates[band][1]:4d}/{rates[band][0]:4d})"
                        for _, rates in cols)
        print(f"  {band:16s} {goal:>10s}{cells}")
    print("  (a pair counts when both documents passed that pipeline's quality filters; removed = the copy or the "
          "original removed by dedup)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=100, help="corpus size to build, MB of JSONL (default 100)")
    ap.add_argument("--corpus", type=Path, help="existing landing dir of *.jsonl to use instead of building one")
    ap.add_argument("--skip-datatrove", action="store_true", help="run ours only (e.g. the 1 GB memory check)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--datatrove-venv", type=Path, default=ROOT / ".bench-venv")
    ap.add_argument("--workers", type=int, default=2, help="datatrove worker processes (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jaccard-threshold", type=float, default=0.8, help="ours' near-dup threshold (default 0.8)")
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python")
                    if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable,
                    help="project interpreter for our pipeline")
    ap.add_argument("--child-ours", nargs=4, metavar=("MODE", "LANDING", "WORK", "T"), help=argparse.SUPPRESS)
    ap.add_argument("--child-datatrove", nargs=2, metavar=("LANDING", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_ours:
        return child_ours(args.child_ours[0], Path(args.child_ours[1]), Path(args.child_ours[2]),
                          float(args.child_ours[3]))
    if args.child_datatrove:
        return child_datatrove(Path(args.child_datatrove[0]), Path(args.child_datatrove[1]), args.workers)

    dt_py = None if args.skip_datatrove else ensure_datatrove_venv(args.datatrove_venv.resolve())
    tmp = Path(tempfile.mkdtemp(prefix="bench-curation-"))
    exit_code = 0
    try:
        if args.corpus:
            landing = args.corpus.resolve()
            corpus = describe_corpus(landing)
            if corpus["files"] == 0:
                sys.exit(f"no *.jsonl in {landing}")
            build_s = 0.0
        else:
            landing = tmp / "landing"
            t = time.perf_counter()
            corpus = build_corpus(landing, args.mb, args.seed)
            build_s = time.perf_counter() - t
        mb, docs = corpus["bytes"] / 1e6, corpus["docs"]
        mix = ", ".join(f"{corpus[k]} {k.replace('_', ' ')}" for k in ("unique", "exact_copy", "near_copy", "short", "noisy")
                        if k in corpus)
        print(f"corpus: {docs} docs, {mb:.1f} MB JSONL in {corpus['files']} files ({mix or landing})"
              + (f", built in {build_s:.1f} s" if build_s else ""), flush=True)

        me = [args.python, __file__]
        runs = {
            "ours (b)": [*me, "--child-ours", "full", str(landing), str(tmp / "ours"), str(args.jaccard_threshold)],
            "ours (a)": [*me, "--child-ours", "curate", str(landing), str(tmp / "ours"), str(args.jaccard_threshold)],
        }
        if dt_py:
            runs["datatrove"] = [str(dt_py), __file__, "--workers", str(args.workers), "--child-datatrove",
                                 str(landing), str(tmp / "datatrove")]
        res = {}
        for name, cmd in runs.items():
            r = res[name] = run_measured(cmd, tmp / f"{re.sub(r'[^a-z]+', '_', name).strip('_')}.log")
            print(f"  [{name}: {'FAILED' if 'error' in r else 'done'} after {r.get('wall_process', 0):.0f} s]",
                  flush=True)
        ok = {k: v for k, v in res.items() if "error" not in v}
        if ok:
            report(ok, docs, mb, args.workers)
        if ok and not args.corpus:
            t = time.perf_counter()
            pairs = near_copy_pairs(landing)
            print(f"\nnear-dup quality: {len(pairs)} near copies, exact Jaccard with their original measured "
                  f"in {time.perf_counter() - t:.1f} s (5-word shingles of the lower-cased, whitespace-split content)")
            report_bands(pairs, ok, args.jaccard_threshold)
        for name, r in res.items():
            if "error" in r:
                print(f"\n{name} FAILED: {r['error']}")
        if len(ok) < len(res):
            args.keep = True
            exit_code = 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
