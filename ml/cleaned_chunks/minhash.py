"""Near-duplicate detection: MinHash signatures + LSH banding, vectorised with numpy.

- Shingles are word n-grams (default 5) hashed to uint64 (``WordArrays.ngram_hashes``);
  a document shorter than n words gets one shingle of all its words.
- ``num_perm`` hash functions h_j(x) = a_j·x + b_j (mod 2^64, a_j odd), minimum per
  document, top 32 bits kept: a (n_docs × num_perm) uint32 signature, computed in
  fixed-size slices of shingles on several threads (numpy releases the GIL), so
  memory stays bounded even for one huge document.
- Bands × rows are chosen from the Jaccard threshold by minimising the weighted
  false-positive and false-negative areas of the LSH S-curve (``lsh_params``).
- Documents sharing a band bucket become candidates; a candidate pair is accepted
  when its estimated Jaccard (share of equal signature entries) reaches the
  threshold; accepted pairs are joined with union-find, and the earliest document
  of each cluster is kept.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MIX = np.uint64(0x9E3779B97F4A7C15)
SLICE = 1 << 13  # shingles per slice: 8k × 128 perms × 8 B = 8 MB per thread (fits in cache better than 32k)


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.2, fn_weight: float = 0.8) -> tuple[int, int]:
    """(bands, rows) with bands·rows ≤ num_perm minimising fp_weight·FP + fn_weight·FN.

    FP = ∫₀ᵗ P(candidate | s) ds and FN = ∫ₜ¹ (1 − P(candidate | s)) ds with
    P(candidate | s) = 1 − (1 − s^r)^b. Candidates are verified afterwards, so
    false negatives (missed duplicates) weigh more than false positives.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    lo, hi = np.linspace(0.0, threshold, 201), np.linspace(threshold, 1.0, 201)
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - lo**r) ** b, lo)
            fn = np.trapezoid((1 - hi**r) ** b, hi)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def candidate_probability(s: float, bands: int, rows: int) -> float:
    return 1 - (1 - s**rows) ** bands


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


def _band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    out = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            h = np.full(sig.shape[0], np.uint64(j + 1), dtype=np.uint64)
            for k in range(rows):
                h *= MIX
                h ^= sig[:, j * rows + k].astype(np.uint64)
            out[:, j] = h
    return out


def candidate_pairs(sig: np.ndarray, has: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Unique (i, j), i < j, pairs of documents sharing at least one band bucket."""
    idx = np.flatnonzero(has)
    if len(idx) < 2:
        return np.empty((0, 2), dtype=np.int64)
    bh = _band_hashes(sig if len(idx) == len(sig) else sig[idx], bands, rows)  # no copy when all have shingles
    pairs = []
    for j in range(bands):
        order = np.argsort(bh[:, j], kind="stable")
        sorted_h = bh[order, j]
        new_group = np.r_[True, sorted_h[1:] != sorted_h[:-1]]
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
        member = ~new_group
        if member.any():
            # each bucket member pairs with the bucket's first (earliest) document
            pairs.append(np.stack([idx[order[group_start[member]]], idx[order[member]]], axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    p = np.concatenate(pairs)
    p.sort(axis=1)
    return np.unique(p, axis=0)


def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    out = np.empty(len(pairs))
    for lo in range(0, len(pairs), 65536):
        p = pairs[lo:lo + 65536]
        out[lo:lo + 65536] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    return out


def cluster_representatives(n: int, pairs: np.ndarray) -> np.ndarray:
    """For each document, the earliest document of its cluster (itself if alone)."""
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smaller index is the root: earliest doc kept
    return np.array([find(i) for i in range(n)])


@dataclass(frozen=True)
class NearDupResult:
    representative: np.ndarray  # index of the kept doc of each doc's cluster
    candidates: int
    accepted: int
    bands: int
    rows: int


def near_duplicates(sig: np.ndarray, has: np.ndarray, threshold: float) -> NearDupResult:
    bands, rows = lsh_params(threshold, sig.shape[1])
    pairs = candidate_pairs(sig, has, bands, rows)
    accepted = pairs[estimated_jaccard(sig, pairs) >= threshold] if len(pairs) else pairs
    rep = cluster_representatives(sig.shape[0], accepted)
    return NearDupResult(rep, len(pairs), len(accepted), bands, rows)
