"""Near-duplicate detection: MinHash + LSH finds candidates, exact Jaccard of word 5-gram sets decides.

The signature never decides: every candidate pair is checked exactly, greedily in document order, so the
earliest document of a group is kept and ``duplicate_of`` names a kept document. The definition:
ml/FORMATS.md ("cleaned_chunks"); hashing, LSH parameters and bounds: DESIGN.md, "Module notes".
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

MIX = np.uint64(0x9E3779B97F4A7C15)
SLICE = 1 << 13  # shingles per slice: 8k × 128 perms × 8 B = 8 MB per thread (fits in cache better than 32k)
LSH_MISS = 1e-3  # a pair at exactly the threshold fails to become a candidate with at most this probability
MAX_BUCKET_KEPT = 64


def candidate_probability(s: float, bands: int, rows: int) -> float:
    """P(a pair of Jaccard s shares at least one band bucket) = 1 − (1 − s^rows)^bands."""
    return 1 - (1 - s**rows) ** bands


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, miss: float = LSH_MISS) -> tuple[int, int]:
    """(bands, rows), bands·rows ≤ num_perm: the most rows per band whose S-curve still makes a
    pair at ``threshold`` a candidate with probability ≥ 1 − miss (bands = num_perm // rows).
    More rows = fewer chance candidates far below the threshold; the exact check removes those
    anyway, so only the miss rate at the threshold matters for the result."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"jaccard threshold must be in (0, 1), got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - candidate_probability(threshold, bands, rows) <= miss:
            return bands, rows
    return num_perm, 1  # the best there is: every permutation its own band


@dataclass(frozen=True)
class MinHasher:
    num_perm: int = 128
    seed: int = 42

    def _coeffs(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        a = rng.integers(1, 2**63, self.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = rng.integers(0, 2**63, self.num_perm, dtype=np.uint64)
        return a, b

    def signatures(self, doc: np.ndarray, shingles: np.ndarray, n_docs: int, threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """(signatures uint32 [n_docs, num_perm], has_shingles bool [n_docs]); doc must be sorted."""
        a, b = self._coeffs()
        sig = np.full((n_docs, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        has = np.zeros(n_docs, dtype=bool)
        if len(shingles) == 0:
            return sig, has
        has[doc] = True

        def work(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
            """Per-document minima over shingles lo..hi (a slice may cut through a document)."""
            hv = np.multiply.outer(shingles[lo:hi], a)  # wraps mod 2^64
            hv += b
            seg = np.flatnonzero(np.r_[True, doc[lo + 1:hi] != doc[lo:hi - 1]])
            mins = np.minimum.reduceat(hv, seg, axis=0)
            return doc[lo + seg], (mins >> np.uint64(32)).astype(np.uint32)

        bounds = list(range(0, len(doc), SLICE)) + [len(doc)]
        with np.errstate(over="ignore"), ThreadPoolExecutor(max(1, threads)) as pool:
            # documents cut by a slice boundary get partial minima from two slices: fold them here
            for docs, mins in pool.map(lambda ab: work(*ab), zip(bounds[:-1], bounds[1:])):
                sig[docs] = np.minimum(sig[docs], mins)
        return sig, has


def _band_hash(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    h = np.full(sig.shape[0], np.uint64(band + 1), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(rows):
            h *= MIX
            h ^= sig[:, band * rows + k].astype(np.uint64)
    return h


def shared_buckets(sig: np.ndarray, has: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc, bucket) of every document in a band bucket that holds at least two documents,
    sorted by doc then bucket. Bucket ids are unique across bands. Only these documents can
    be near duplicates of one another; every other document is kept without a comparison."""
    idx = np.flatnonzero(has)
    docs_out, buckets_out = [], []
    if len(idx) >= 2:
        sub = sig if len(idx) == len(sig) else sig[idx]
        for band in range(bands):
            h = _band_hash(sub, band, rows)
            shared = pl.Series(h).is_duplicated().to_numpy()  # hash-based, no sort of the whole band
            if not shared.any():
                continue
            _, bucket = np.unique(h[shared], return_inverse=True)
            docs_out.append(idx[shared])
            buckets_out.append(bucket.astype(np.int64) + band * len(idx))
    if not docs_out:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    d, b = np.concatenate(docs_out), np.concatenate(buckets_out)
    order = np.lexsort((b, d))
    return d[order], b[order]


@dataclass(frozen=True)
class ShingleSets:
    """Sorted, de-duplicated uint64 shingle hashes of some documents (by document index)."""

    docs: np.ndarray  # int64, ascending: the documents held
    offsets: np.ndarray  # int64, len(docs) + 1
    values: np.ndarray  # uint64, each document's hashes ascending and unique

    @classmethod
    def from_hashes(cls, doc: np.ndarray, hashes: np.ndarray) -> "ShingleSets":
        """From (document index, shingle hash) pairs in any order, repeats allowed."""
        doc = np.asarray(doc, dtype=np.int64)
        hashes = np.asarray(hashes, dtype=np.uint64)
        order = np.lexsort((hashes, doc))
        doc, hashes = doc[order], hashes[order]
        first = np.r_[True, (doc[1:] != doc[:-1]) | (hashes[1:] != hashes[:-1])] if len(doc) else np.empty(0, bool)
        doc, hashes = doc[first], hashes[first]
        docs, counts = np.unique(doc, return_counts=True)
        return cls(docs, np.r_[0, np.cumsum(counts)].astype(np.int64), hashes)

    def __getitem__(self, d: int) -> np.ndarray:
        k = int(np.searchsorted(self.docs, d))
        if k == len(self.docs) or self.docs[k] != d:
            raise KeyError(f"no shingles held for document {d}")
        return self.values[self.offsets[k]:self.offsets[k + 1]]


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two sorted, unique uint64 arrays."""
    if len(a) > len(b):
        a, b = b, a
    if len(a) == 0:
        return 1.0 if len(b) == 0 else 0.0
    pos = np.searchsorted(b, a)
    pos[pos == len(b)] = len(b) - 1
    inter = int(np.count_nonzero(b[pos] == a))
    return inter / (len(a) + len(b) - inter)


@dataclass(frozen=True)
class NearDupResult:
    duplicate_of: np.ndarray  # int64 per doc: the kept document it duplicates, -1 when kept
    similarity: np.ndarray  # float64 per doc: exact Jaccard with duplicate_of, NaN when kept
    candidate_docs: int  # documents sharing at least one bucket
    verified_pairs: int  # exact Jaccard computations
    bucket_overflow: int  # kept documents a full bucket did not remember
    bands: int
    rows: int

    @property
    def removed(self) -> int:
        return int(np.count_nonzero(self.duplicate_of >= 0))


def resolve(n_docs: int, doc: np.ndarray, bucket: np.ndarray, sets: ShingleSets, threshold: float,
            bands: int = 0, rows: int = 0, max_bucket_kept: int = MAX_BUCKET_KEPT,
            known_kept: int = 0) -> NearDupResult:
    """The greedy decision over ``shared_buckets`` output (see the module docstring). Documents
    ``0 .. known_kept - 1`` were decided kept by an earlier merge (an incremental run): they only
    take their places in the buckets, in order, exactly as a cold run put them there."""
    dup_of = np.full(n_docs, -1, dtype=np.int64)
    sim = np.full(n_docs, np.nan)
    kept_in: dict[int, list[int]] = {}
    verified = overflow = 0
    cuts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1], True]) if len(doc) else np.zeros(1, np.int64)
    docs, buckets = doc[cuts[:-1]].tolist(), bucket.tolist()
    for k, d in enumerate(docs):
        mine = buckets[cuts[k]:cuts[k + 1]]
        cands: set[int] = set()
        for b in mine:
            if (kept := kept_in.get(b)) is not None:
                cands.update(kept)
        if cands and d >= known_kept:
            s_d = sets[d]
            for j in sorted(cands):  # earliest kept document first
                verified += 1
                s = exact_jaccard(sets[j], s_d)
                if s >= threshold:
                    dup_of[d], sim[d] = j, s
                    break
        if dup_of[d] < 0:
            for b in mine:
                kept = kept_in.setdefault(b, [])
                if len(kept) < max_bucket_kept:
                    kept.append(d)
                else:
                    overflow += 1
    return NearDupResult(dup_of, sim, len(docs), verified, overflow, bands, rows)


def near_duplicates(sig: np.ndarray, has: np.ndarray, threshold: float, shingles_of,
                    max_bucket_kept: int = MAX_BUCKET_KEPT) -> NearDupResult:
    """Near duplicates among ``sig.shape[0]`` documents in order. ``shingles_of(docs)`` returns a
    ``ShingleSets`` holding (at least) the ascending document indices ``docs``: it is called
    once, for the documents that share a bucket with another one."""
    bands, rows = lsh_params(threshold, sig.shape[1])
    doc, bucket = shared_buckets(sig, has, bands, rows)
    sets = shingles_of(np.unique(doc)) if len(doc) else ShingleSets(np.empty(0, np.int64), np.zeros(1, np.int64),
                                                                      np.empty(0, np.uint64))
    return resolve(sig.shape[0], doc, bucket, sets, threshold, bands, rows, max_bucket_kept)
