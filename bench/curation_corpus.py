"""The benchmark corpus of bench/curation.py: generated JSONL with known copies, and its measured truth.

``build_corpus(landing, mb, seed)``: ``mb`` MB of JSONL (title / content / url), built
deterministically (seeded RNG) from the embedded sample corpus (``ml.sample_corpus``, ~3,100 docs
of real English text): each synthetic document strings together 3-12 paragraphs, each paragraph a
run of 2-7 consecutive prose sentences of a different random source document, so documents are
unique and almost all long enough for Gopher's 50-word minimum. "Prose" drops the code-like
sentences (doctest lines, signatures) whose punctuation tokens would make datatrove's spaCy-token
alpha-words rule drop most documents while ours (whitespace words) keeps them. Mixed in: ~5 % exact
copies (new url) and ~5 % near copies of earlier documents, ~3 % short (1-2 sentence) documents and
~2 % "noisy" ones built from all sentences, code-like included. A near copy gets as many random word
edits as a Jaccard drawn uniformly from [0.4, 1.0) needs; its url names its original
(``.../near_copy/<n>/of/<m>``). Written as >= 4 files (about 50 MB each for big corpora).

``build_increment(landing, name, mb, seed)``: one more file of ``mb`` MB, built the same way (new
documents, and copies of documents of the corpus already in ``landing``: the increment's dedup
has to look at the stored index), for the incremental-landing measurement.

``near_copy_pairs`` measures every near copy's exact Jaccard with its original (the stage's
definition: 5-word shingles of the lower-cased, whitespace-split text, as sets); ``band_rates``
bins the pairs for the near-dup quality table.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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



def build_increment(landing: Path, name: str, mb: float, seed: int = 1) -> dict:
    """Write ``landing/name``: ~mb MB of new documents (``build_corpus``'s mix), plus exact and near
    copies (1 in 10 lines) of documents of the ``*.jsonl`` already in ``landing``."""
    import tempfile

    rng = random.Random(seed)
    earlier: list[dict] = []
    for path in sorted(landing.glob("*.jsonl"))[:2]:  # a sample of the earlier documents to copy
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i % 50 == 0 and "/unique/" in line:
                    earlier.append(json.loads(line))
    vocab = sorted({w for d in earlier[:200] for w in d["content"].split() if w.isalpha()})
    with tempfile.TemporaryDirectory() as tmp:
        made = build_corpus(Path(tmp), mb, seed)
        lines = [line for p in sorted(Path(tmp).glob("*.jsonl")) for line in open(p, encoding="utf-8")]
    copies = 0
    with open(landing / name, "w", encoding="utf-8") as f:
        for k, line in enumerate(lines):
            f.write(line.replace(URL + "/", f"{URL}/inc/"))
            if k % 10 == 0 and earlier:
                d = dict(rng.choice(earlier))
                if rng.random() < 0.5:
                    d["content"] = _near_copy(rng, d["content"], vocab, rng.uniform(0.85, 1.0))
                d["url"] = f"{URL}/inc-copy/{k}"
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
                copies += 1
    return {**made, "copies_of_earlier": copies, "bytes": (landing / name).stat().st_size}
