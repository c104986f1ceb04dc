"""Train/val/test split by document: a pure function of (seed, doc_id).

A document lands in the same split in every dataset and in ``tokenized_corpus``; test comes out of train,
so adding a test split moves no val document. The rule: ml/FORMATS.md, "Splits and mixing".
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import polars as pl

DEFAULT_SEED = 1234
DEFAULT_VAL_RATIO = 0.05
DEFAULT_TEST_RATIO = 0.05
SPLITS = ("train", "val", "test")
HELD_OUT = ("val", "test")
_SCALE = float(1 << 64)


def check_ratio(val_ratio: float, test_ratio: float = 0.0) -> None:
    if not (0.0 <= val_ratio < 1.0):
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio!r}")
    if not (0.0 <= test_ratio < 1.0) or val_ratio + test_ratio >= 1.0:
        raise ValueError(f"test_ratio must be in [0, 1) with val_ratio + test_ratio < 1, got test_ratio="
                         f"{test_ratio!r} (val_ratio {val_ratio!r})")


def doc_unit(seed: int, doc_id: str, salt: str = "split") -> float:
    """A uniform number in [0, 1) drawn from blake2b(salt, seed, doc_id): stable across runs, machines
    and library versions."""
    h = hashlib.blake2b(f"{salt}\x1f{int(seed)}\x1f{doc_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / _SCALE


def _split_of(u: float, val_ratio: float, test_ratio: float) -> str:
    return "val" if u < val_ratio else "test" if u < val_ratio + test_ratio else "train"


def doc_split(doc_ids: Iterable[str], seed: int = DEFAULT_SEED, val_ratio: float = DEFAULT_VAL_RATIO,
              test_ratio: float = 0.0) -> list[str]:
    """"train", "val" or "test" for each doc id (module docstring: val below val_ratio, then test)."""
    check_ratio(val_ratio, test_ratio)
    return [_split_of(doc_unit(seed, d), val_ratio, test_ratio) for d in doc_ids]


def with_split(frame: pl.DataFrame, seed: int = DEFAULT_SEED, val_ratio: float = DEFAULT_VAL_RATIO,
               column: str = "doc_id", test_ratio: float = 0.0) -> pl.DataFrame:
    """``frame`` with a ``split`` column computed from its doc ids."""
    ids = frame[column].unique()
    table = pl.DataFrame({column: ids, "split": doc_split(ids.to_list(), seed, val_ratio, test_ratio)},
                         schema={column: pl.String, "split": pl.String})
    return frame.join(table, on=column, how="left", maintain_order="left")


def texts_by_split(docs: pl.DataFrame, seed: int = DEFAULT_SEED, val_ratio: float = DEFAULT_VAL_RATIO,
                   test_ratio: float = 0.0) -> dict[str, list[str]]:
    """The ``text`` of ``docs`` (doc_id, text) per split, in frame order: ``{"train": [...], "val": [...],
    "test": [...]}``."""
    split = with_split(docs.select("doc_id", "text"), seed, val_ratio, test_ratio=test_ratio)
    return {k: split.filter(pl.col("split") == k)["text"].to_list() for k in SPLITS}


def drop_cross_split_duplicates(train: pl.DataFrame, val: pl.DataFrame, keys: list[str]
                                ) -> tuple[pl.DataFrame, int]:
    """Val rows whose ``keys`` equal a train row's are dropped (the same text from two documents would
    otherwise leak across the split); returns (val kept, dropped count)."""
    if val.height == 0 or train.height == 0:
        return val, 0
    kept = val.join(train.select(keys).unique(), on=keys, how="anti", maintain_order="left")
    return kept, val.height - kept.height
