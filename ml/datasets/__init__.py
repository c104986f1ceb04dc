"""Training datasets built from the corpus: splits, mixing and one module per dataset.

Each ``build_*`` returns ``({"train": frame, "val": frame, "test": frame}, stats)`` and ``write_splits``
stores them; the split is by document and the same everywhere (``splits.doc_split``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import polars as pl


def write_splits(out: Path, splits: dict[str, pl.DataFrame]) -> int:
    """``out/train.parquet``, ``out/val.parquet`` and ``out/test.parquet`` (an empty frame of the train schema
    when the builder made no test split); returns the total row count."""
    names = ("train", "val", "test")
    for name in names:
        frame = splits.get(name)
        if frame is None:
            frame = splits["train"].clear()
        frame.write_parquet(Path(out) / f"{name}.parquet")
    return sum(splits[n].height for n in names if n in splits)


def split_counts(splits: dict[str, pl.DataFrame], column: str, values: Iterable[str]) -> dict[str, float]:
    """Per split: ``<split>.examples``, ``<split>.docs`` and ``<split>.<column>.<value>`` (rows per value)."""
    stats: dict[str, float] = {}
    for name, frame in splits.items():
        counts = dict(frame.group_by(column).len().iter_rows())
        stats.update({f"{name}.{column}.{v}": counts.get(v, 0) for v in values})
        stats[f"{name}.examples"] = frame.height
        stats[f"{name}.docs"] = frame["doc_id"].n_unique()
    return stats
