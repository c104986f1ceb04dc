"""Near-duplicate detection: recall and removals by band of *measured* exact Jaccard.

Pairs are generated at a target similarity, then their Jaccard is measured with the README's
definition written out here independently of the stage's hashing (5-word shingles of the
lower-cased, whitespace-split text, as sets). The stage runs end to end (``curate``), so the
LSH, the re-read of candidate shingles from the spilled text and the ``similarity`` column
are all exercised.
"""

import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml.cleaned_chunks.filters import WordArrays
from ml.cleaned_chunks.minhash import (MinHasher, ShingleSets, candidate_probability, exact_jaccard, lsh_params,
                                       near_duplicates)
from ml.cleaned_chunks.pipeline import CurationConfig, _shingles, curate, read_clean_docs, read_decisions
from tests.helpers.near_dedup import NO_RULES, edited, jaccard, noisy_join, shingle_set, vocabulary

CFG = CurationConfig(filters=NO_RULES, batch_docs=1500)  # several batches: candidates span spill parts
DOC_WORDS = 120


# disjoint strata of measured Jaccard and how many pairs each gets
STRATA = {(0.30, 0.50): 300, (0.50, 0.60): 300, (0.60, 0.68): 400, (0.68, 0.70): 100, (0.70, 0.72): 150,
          (0.72, 0.75): 250, (0.75, 0.78): 200, (0.78, 0.80): 100, (0.80, 0.82): 150, (0.82, 0.85): 250,
          (0.85, 1.00): 300}


def make_pairs(seed: int) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    need = dict(STRATA)
    pairs = []
    while any(need.values()):
        lo, hi = rng.choice([s for s, n in need.items() if n])
        base = rng.sample(vocab, DOC_WORDS)
        a, b = " ".join(base), noisy_join(rng, edited(rng, base, vocab, rng.uniform(lo, hi)))
        j = jaccard(a, b)
        home = next((s for s in need if s[0] <= j < s[1] or (s[1] == 1.0 and j == 1.0)), None)
        if home and need[home] and a.lower().split() != b.lower().split():
            need[home] -= 1
            pairs.append((a, b, j))
    return pairs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[tuple[str, str, float]], np.ndarray]:
    """Every pair's two documents at random places in one corpus; the 'copy' comes first in a
    random half of the pairs, so 'the earliest is kept' is not the same as 'the original is kept'."""
    pairs = make_pairs(13)
    rng = np.random.default_rng(13)
    slots = rng.permutation(2 * len(pairs)).reshape(len(pairs), 2)  # slots[i] = positions of (a, b)
    texts = [""] * (2 * len(pairs))
    for (a, b, _), (pa, pb) in zip(pairs, slots):
        texts[pa], texts[pb] = a, b
    raw = tmp_path_factory.mktemp("near") / "raw.parquet"
    pl.DataFrame({"doc_id": [f"d{i:05d}" for i in range(len(texts))], "title": "t", "url": "u", "source": "s",
                  "content": texts}).write_parquet(raw)
    return raw, pairs, slots


def run(raw: Path, tmp: Path, threshold: float) -> pl.DataFrame:
    curate([raw], tmp / "out", tmp / "tmp", replace(CFG, jaccard_threshold=threshold))
    return read_decisions(tmp / "out").collect()


@pytest.mark.parametrize("t", [0.8, 0.7])
def test_band_recall_and_removals_at_measured_jaccard(corpus, tmp_path, t):
    raw, pairs, slots = corpus
    dec = run(raw, tmp_path, t)
    decision, dup_of, sim = dec["decision"].to_list(), dec["duplicate_of"].to_list(), dec["similarity"].to_list()
    js = np.array([j for _, _, j in pairs])
    first, second = slots.min(axis=1), slots.max(axis=1)
    removed = np.array([decision[s] == "near_duplicate" for s in second])

    # the earliest document of every pair is kept; a removed one points at its own pair's first
    assert all(decision[f] == "kept" for f in first)
    for i in np.flatnonzero(removed):
        assert dup_of[second[i]] == f"d{first[i]:05d}"
        # the recorded similarity is the documented Jaccard, reproduced by hand here
        assert sim[second[i]] == pytest.approx(js[i], abs=1e-12) and sim[second[i]] >= t
    assert all(s is None for s, d in zip(sim, decision) if d == "kept")

    def rate(lo: float, hi: float) -> tuple[float, int]:
        m = (js >= lo) & (js <= hi)
        return removed[m].mean(), int(m.sum())

    at, n_at = rate(t, t + 0.05)
    above, n_above = rate(t + 0.05, 1.0)
    near_below, n_near_below = rate(t - 0.10, t - 0.02)
    far, n_far = rate(0.0, t - 0.2)
    assert min(n_at, n_above, n_near_below, n_far) >= 300  # hundreds of pairs per band
    assert at >= 0.97, (at, n_at)
    assert above >= 0.99, (above, n_above)
    assert near_below <= 0.03, (near_below, n_near_below)
    assert far <= 0.005, (far, n_far)
    # exact, not estimated: nothing below the threshold goes, right up to it
    assert not removed[js < t].any()
    just_above = (js >= t) & (js < t + 0.02)
    assert just_above.sum() >= 100 and removed[just_above].mean() >= 0.97


def test_bands_and_rows_make_pairs_at_the_threshold_candidates():
    params = {t: lsh_params(t, 128) for t in (0.5, 0.7, 0.8, 0.9)}
    assert len(set(params.values())) == 4  # the banding moves with the threshold
    assert params[0.8] == (25, 5) and params[0.7] == (32, 4)
    for t, (b, r) in params.items():
        assert b * r <= 128
        assert candidate_probability(t, b, r) >= 0.999  # at the threshold: almost always a candidate
        # and one more row per band would miss more than that (the fewest chance candidates)
        assert r == 128 or candidate_probability(t, 128 // (r + 1), r + 1) < 0.999
    with pytest.raises(ValueError):
        lsh_params(1.0, 128)


def chain(rng: random.Random, n: int = 200) -> tuple[str, str, str]:
    """A ≈ B and B ≈ C at the threshold 0.8, but A ≉ C: B edits A's first half, C edits B's second half."""
    vocab = vocabulary(rng, 5_000)
    while True:
        a = rng.sample(vocab, n)
        b = list(a)
        for j in rng.sample(range(n // 2), 4):
            b[j] = rng.choice(vocab)
        c = list(b)
        for j in rng.sample(range(n // 2, n), 4):
            c[j] = rng.choice(vocab)
        A, B, C = (" ".join(x) for x in (a, b, c))
        if jaccard(A, B) >= 0.82 and jaccard(B, C) >= 0.82 and jaccard(A, C) < 0.78:
            return A, B, C


def test_chains_are_not_transitive(tmp_path):
    """README: a document is removed only for a kept document it is ≥ threshold similar to."""
    A, B, C = chain(random.Random(5))
    for name, texts in (("abc", [A, B, C]), ("bac", [B, A, C])):
        raw = tmp_path / f"{name}.parquet"
        pl.DataFrame({"doc_id": ["x0", "x1", "x2"], "title": "t", "url": "u", "source": "s", "content": texts}) \
            .write_parquet(raw)
        dec = run(raw, tmp_path / name, 0.8)
        rows = {r["doc_id"]: (r["decision"], r["duplicate_of"], r["similarity"]) for r in dec.iter_rows(named=True)}
        if name == "abc":
            # A kept; B removed as a copy of A; C kept: its only match (B) is gone and C is no copy of A
            assert rows["x0"][0] == "kept" and rows["x2"][0] == "kept"
            assert rows["x1"][:2] == ("near_duplicate", "x0")
            assert rows["x1"][2] == pytest.approx(jaccard(A, B))
            assert read_clean_docs(tmp_path / name / "out").collect()["doc_id"].to_list() == ["x0", "x2"]
        else:
            # B first: A and C are both copies of the kept B
            assert rows["x0"][0] == "kept"
            assert rows["x1"][:2] == ("near_duplicate", "x0") and rows["x2"][:2] == ("near_duplicate", "x0")
            assert rows["x2"][2] == pytest.approx(jaccard(B, C))


def shingle_sets_of(texts: list[str]) -> tuple[np.ndarray, np.ndarray, ShingleSets]:
    words = WordArrays.from_texts(pl.Series(texts))
    doc, sh = _shingles(words, 5, np.arange(len(texts)))
    sig, has = MinHasher(128, 42).signatures(doc, sh, len(texts))
    return sig, has, ShingleSets.from_hashes(doc, sh)


def test_stage_shingles_are_the_documented_shingles():
    """Hashed shingle sets give exactly the by-hand Jaccard (repeats, case, whitespace, short docs)."""
    rng = random.Random(2)
    vocab = vocabulary(rng, 3_000)
    texts = []
    for _ in range(40):
        w = [rng.choice(vocab[:60]) for _ in range(rng.randint(1, 40))]  # small vocab: repeated shingles
        texts.append(noisy_join(rng, w))
    _, _, sets = shingle_sets_of(texts)
    for i in range(len(texts)):
        assert len(sets[i]) == len(shingle_set(texts[i]))
        for j in range(i + 1, len(texts)):
            assert exact_jaccard(sets[i], sets[j]) == pytest.approx(jaccard(texts[i], texts[j]), abs=1e-12)


def test_short_documents_and_docs_without_shingles():
    texts = ["only three words", "Only  THREE words", "something else entirely", "only three words here"]
    sig, has, sets = shingle_sets_of(texts)
    has[3] = False  # a document with no shingles never becomes a candidate
    res = near_duplicates(sig, has, 0.8, lambda docs: sets)
    assert res.duplicate_of.tolist() == [-1, 0, -1, -1]
    assert res.similarity[1] == 1.0 and math.isnan(res.similarity[0])


def test_full_buckets_bound_the_work_and_say_so():
    """Many mutually different documents in one bucket: each bucket remembers a bounded number
    of kept documents and counts the rest."""
    rng = random.Random(4)
    vocab = vocabulary(rng, 5_000)
    common = rng.sample(vocab, 150)
    texts = [" ".join(common + rng.sample(vocab, 60)) for _ in range(30)]  # J ≈ 0.55 with each other
    sig, has, sets = shingle_sets_of(texts)
    free = near_duplicates(sig, has, 0.8, lambda docs: sets)
    capped = near_duplicates(sig, has, 0.8, lambda docs: sets, max_bucket_kept=2)
    assert free.removed == capped.removed == 0
    assert free.bucket_overflow == 0 and capped.bucket_overflow > 0
    assert capped.verified_pairs < free.verified_pairs


def test_signatures_do_not_depend_on_how_shingles_are_sliced(monkeypatch):
    import ml.cleaned_chunks.minhash as minhash

    rng = np.random.default_rng(3)
    sizes = [1, 5, 40, 3, 250]  # the last document is far larger than a slice
    doc = np.repeat(np.arange(len(sizes)), sizes)
    shingles = rng.integers(0, 2**63, len(doc), dtype=np.uint64)
    whole, has = MinHasher(64, 1).signatures(doc, shingles, len(sizes), threads=1)
    for slice_size in (7, 16, 41, 1000):
        monkeypatch.setattr(minhash, "SLICE", slice_size)
        sliced, has2 = MinHasher(64, 1).signatures(doc, shingles, len(sizes), threads=2)
        assert np.array_equal(sliced, whole) and np.array_equal(has, has2)
    # and the minimum really is the per-document minimum of the permuted hashes
    a, b = MinHasher(64, 1)._coeffs()
    with np.errstate(over="ignore"):
        expect = ((np.multiply.outer(shingles[-250:], a) + b).min(axis=0) >> np.uint64(32)).astype(np.uint32)
    assert np.array_equal(whole[-1], expect)
