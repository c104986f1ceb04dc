"""Training datasets built from the corpus: splits, mixing and one module per dataset.

- ``splits.doc_split``: train/val/test by document, the same everywhere (no leakage across splits).
- ``mixing.apply_mix``: ``source -> weight`` shares of the train split, by seeded downsampling.
- ``embedding``: (anchor, positive) pairs for contrastive training.
- ``relation``: entity-marked sentences -> relation label, with a balanced ``no_relation`` class.
- ``sft``: chat-template instruction / response pairs and ``encode_sft`` (prompt tokens masked).

Each ``build_*`` returns ``({"train": frame, "val": frame, "test": frame}, stats)``; ``write_splits``
stores them.
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
