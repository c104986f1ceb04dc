"""MinHash LSH against exact Jaccard on generated document pairs."""

import random

import numpy as np
import polars as pl
import pytest

from ml.cleaned_chunks.filters import WordArrays
from ml.cleaned_chunks.minhash import MinHasher, candidate_probability, lsh_params, near_duplicates
from ml.cleaned_chunks.pipeline import _shingles


def shingles(words: list[str], n: int = 5) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def make_pairs(rng: random.Random, n_pairs: int, edits: range) -> list[tuple[list[str], list[str], float]]:
    vocab = [f"w{rng.getrandbits(40):x}" for _ in range(40_000)]
    out = []
    for _ in range(n_pairs):
        base = rng.sample(vocab, 300)
        other = list(base)
        for pos in rng.sample(range(300), rng.choice(edits)):
            other[pos] = rng.choice(vocab)
        out.append((base, other, jaccard(base, other)))
    return out


def cluster(docs: list[list[str]], threshold: float = 0.8) -> np.ndarray:
    words = WordArrays.from_texts(pl.Series([" ".join(d) for d in docs]))
    keep = np.arange(len(docs))
    doc, sh = _shingles(words, 5, keep)
    sig, has = MinHasher(128, 42).signatures(doc, sh, len(docs))
    return near_duplicates(sig, has, threshold).representative


def test_recall_at_high_jaccard_and_no_false_positives_at_low_jaccard():
    rng = random.Random(7)
    high = [p for p in make_pairs(rng, 300, range(1, 4)) if p[2] >= 0.9]
    low = [p for p in make_pairs(rng, 300, range(14, 40)) if p[2] <= 0.6]
    assert len(high) >= 200 and len(low) >= 200  # the generator gives both regimes
    docs = [d for a, b, _ in high + low for d in (a, b)]
    rep = cluster(docs)
    linked = [rep[2 * i] == rep[2 * i + 1] for i in range(len(high) + len(low))]
    recall = np.mean(linked[: len(high)])
    false_pos = np.mean(linked[len(high):])
    assert recall >= 0.95, recall
    assert false_pos <= 0.01, false_pos
    # within a linked pair the earlier document is the one kept
    for i in range(len(high)):
        if linked[i]:
            assert rep[2 * i + 1] == 2 * i and rep[2 * i] == 2 * i


def test_bands_and_rows_follow_the_threshold():
    params = {t: lsh_params(t, 128) for t in (0.5, 0.7, 0.8, 0.9)}
    assert len(set(params.values())) == 4
    for t, (b, r) in params.items():
        assert b * r <= 128
        # the S-curve is steepest near the threshold it was chosen for
        assert candidate_probability(min(t + 0.1, 0.99), b, r) > 0.9
        assert candidate_probability(t - 0.25, b, r) < 0.3
    with pytest.raises(ValueError):
        lsh_params(1.0, 128)


def test_short_documents_and_empty_text_are_handled():
    docs = [["only", "three", "words"], ["only", "three", "words"], ["something", "else", "entirely"], []]
    rep = cluster(docs)
    assert rep[1] == 0 and rep[2] == 2 and rep[3] == 3


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
