"""Run an extractor over a frame of chunks, through the per-chunk cache.

Chunks are keyed by the digest of their text, so an unchanged text is never parsed twice by one extractor
version; ``min_confidence`` filters on the way out, so changing it needs no re-parse.
"""

from __future__ import annotations

import hashlib
import math

import polars as pl

from ml.relation_triples.base import DEFAULT_MIN_CONFIDENCE, RELATIONS, Extractor, Triple, check_extractor
from ml.relation_triples.cache import TripleCache

TRIPLE_SCHEMA = {
    "chunk_id": pl.String,
    "subject": pl.String,
    "relation": pl.String,
    "object": pl.String,
    "confidence": pl.Float64,
    "evidence_start": pl.Int64,
    "evidence_end": pl.Int64,
    "evidence": pl.String,
    "extractor": pl.String,
}
HIST_BINS = 10


def chunk_digest(text: str) -> str:
    """sha256 of the UTF-8 text, first 32 hex digits: the cache key of a chunk."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def hist_key(i: int) -> str:
    return f"confidence_hist.{i / HIST_BINS:.1f}-{(i + 1) / HIST_BINS:.1f}"


def _bin(confidence: float) -> int:
    return min(int(confidence * HIST_BINS + 1e-9), HIST_BINS - 1)


def _validated(triples: list[Triple], text: str, who: str) -> list[Triple]:
    out = list(triples)
    for t in out:
        if t.relation not in RELATIONS:
            raise ValueError(f"extractor {who} returned relation {t.relation!r}, not one of RELATIONS")
        if not (isinstance(t.confidence, (int, float)) and math.isfinite(t.confidence)
                and 0.0 <= t.confidence <= 1.0):
            raise ValueError(f"extractor {who} returned confidence {t.confidence!r} outside [0, 1]")
        if not (0 <= t.start <= t.end <= len(text)):
            raise ValueError(f"extractor {who} returned evidence span [{t.start}, {t.end}) "
                             f"outside a text of {len(text)} characters")
    return out


def extract_triples(chunks: pl.DataFrame, extractor: Extractor, *,
                    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                    cache: TripleCache | None = None) -> tuple[pl.DataFrame, dict]:
    """Triples of every chunk with confidence >= min_confidence, and stats.

    Rows come in chunk order, then by evidence_start (the extractor's order among equal
    starts). Stats: chunks, chunks_cached / chunks_parsed (rows of ``chunks`` served from
    the cache / not), texts_parsed (extract() calls: distinct uncached texts),
    triples_raw (before the confidence filter), triples (after), below_min_confidence,
    ``relation.<label>`` (output triples per label, every label of RELATIONS present) and
    ``confidence_hist.<lo>-<hi>`` (10 bins over the raw triples, so they sum to
    triples_raw; the last bin includes 1.0).
    """
    missing = {"chunk_id", "text"} - set(chunks.columns)
    if missing:
        raise ValueError(f"chunks frame lacks column(s) {sorted(missing)}; has {chunks.columns}")
    if not (isinstance(min_confidence, (int, float)) and 0.0 <= min_confidence <= 1.0):
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
    check_extractor(extractor)
    if cache is not None and (cache.extractor_name, cache.extractor_version) != (extractor.name, extractor.version):
        raise ValueError(f"cache is for {cache.extractor_name}@{cache.extractor_version}, "
                         f"extractor is {extractor.name}@{extractor.version}")
    tag = f"{extractor.name}@{extractor.version}"

    ids = chunks.get_column("chunk_id").cast(pl.String).to_list()
    texts = [t if t is not None else "" for t in chunks.get_column("text").cast(pl.String).to_list()]
    digests = [chunk_digest(t) for t in texts]

    results: dict[str, list[Triple]] = cache.get_many(list(dict.fromkeys(digests))) if cache else {}
    cached = set(results)
    fresh: dict[str, list[Triple]] = {}
    for d, text in zip(digests, texts):
        if d not in results and d not in fresh:
            fresh[d] = _validated(extractor.extract(text), text, tag)
    if cache is not None and fresh:
        cache.put_many(fresh)
    results.update(fresh)

    cols: dict[str, list] = {name: [] for name in TRIPLE_SCHEMA}
    hist = [0] * HIST_BINS
    per_label = dict.fromkeys(RELATIONS, 0)
    raw = 0
    for cid, text, d in zip(ids, texts, digests):
        triples = sorted(results[d], key=lambda t: t.start)  # stable: ties keep extractor order
        raw += len(triples)
        for t in triples:
            hist[_bin(t.confidence)] += 1
            if t.confidence < min_confidence:
                continue
            per_label[t.relation] = per_label.get(t.relation, 0) + 1
            cols["chunk_id"].append(cid)
            cols["subject"].append(t.subject)
            cols["relation"].append(t.relation)
            cols["object"].append(t.object)
            cols["confidence"].append(float(t.confidence))
            cols["evidence_start"].append(t.start)
            cols["evidence_end"].append(t.end)
            cols["evidence"].append(text[t.start:t.end])
            cols["extractor"].append(tag)
    df = pl.DataFrame(cols, schema=TRIPLE_SCHEMA)

    n_cached = sum(d in cached for d in digests)
    stats: dict = {
        "chunks": len(digests),
        "chunks_cached": n_cached,
        "chunks_parsed": len(digests) - n_cached,
        "texts_parsed": len(fresh),
        "triples_raw": raw,
        "triples": df.height,
        "below_min_confidence": raw - df.height,
    }
    stats.update({f"relation.{label}": n for label, n in per_label.items()})
    stats.update({hist_key(i): n for i, n in enumerate(hist)})
    return df, stats
