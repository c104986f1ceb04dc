"""The relation_triples stage's output: ``triples/part-NNNNN.parquet`` (``TRIPLE_SCHEMA``), one
part per batch of chunks, and its one reader.

``write_triples`` runs the extractor batch by batch (through the per-chunk cache) and sums the
per-batch stats; ``read_triples`` is how every other stage and check reads a version.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ml.relation_triples.base import Extractor
from ml.relation_triples.cache import TripleCache
from ml.relation_triples.extract import TRIPLE_SCHEMA, extract_triples

TRIPLES_DIR = "triples"


def triples_files(version_dir: Path) -> list[Path]:
    """The part files of a relation_triples version, in order."""
    directory = Path(version_dir) / TRIPLES_DIR
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def read_triples(version_dir: Path) -> pl.LazyFrame:
    """Every triple of a relation_triples version (``TRIPLE_SCHEMA``)."""
    files = triples_files(version_dir)
    if not files:
        return pl.LazyFrame(schema=TRIPLE_SCHEMA)
    return pl.scan_parquet(files)


def write_triples(chunks: pl.DataFrame, out: Path, extractor: Extractor, *, min_confidence: float,
                  cache: TripleCache | None, batch_chunks: int) -> dict[str, float]:
    """Triples of ``chunks`` (``chunk_id``, ``text``) into ``out/triples/``, ``batch_chunks`` chunks per
    part (an empty input still writes one empty part); returns the stats of ``extract_triples``
    summed over the parts."""
    if not isinstance(batch_chunks, int) or batch_chunks < 1:
        raise ValueError(f"batch_chunks must be an int >= 1, got {batch_chunks!r}")
    (Path(out) / TRIPLES_DIR).mkdir()
    totals: dict[str, float] = {}
    for part, lo in enumerate(range(0, max(chunks.height, 1), batch_chunks)):
        triples, stats = extract_triples(chunks.slice(lo, batch_chunks), extractor,
                                         min_confidence=min_confidence, cache=cache)
        triples.write_parquet(Path(out) / TRIPLES_DIR / f"part-{part:05d}.parquet")
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
    return totals
