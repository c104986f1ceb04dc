"""Training datasets built from the corpus: splits, mixing and one module per dataset.

- ``splits.doc_split``: train/val by document, the same everywhere (no leakage across splits).
- ``mixing.apply_mix``: ``source -> weight`` shares of the train split, by seeded downsampling.
- ``embedding``: (anchor, positive) pairs for contrastive training.
- ``relation``: entity-marked sentences -> relation label, with a balanced ``no_relation`` class.
- ``sft``: chat-template instruction / response pairs and ``encode_sft`` (prompt tokens masked).

Each ``build_*`` returns ``({"train": frame, "val": frame}, stats)``; ``write_splits`` stores them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl


def write_splits(out: Path, splits: dict[str, pl.DataFrame]) -> int:
    """``out/train.parquet`` and ``out/val.parquet``; returns the total row count."""
    for name in ("train", "val"):
        splits[name].write_parquet(Path(out) / f"{name}.parquet")
    return sum(splits[n].height for n in ("train", "val"))
