"""What every task builder shares (tasks.py, dpo.py): ``Built`` (the Task, its ``save`` and data stats),
``InputError`` (and the input checks ``check_lm_fits``, ``read_label_list``), ``read_split`` (one split of a dataset version, with the columns checked) and
``pad_collate`` (right-padded ids with ``IGNORE`` labels). Its own module so that dpo.py does not
import tasks.py, whose ``BUILDERS`` registry imports dpo.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl
import torch

from ml.train.loop import Batch, Task

IGNORE = -100


@dataclass
class Built:
    task: Task
    save: Callable[[Path], None]
    data: dict[str, Any] = field(default_factory=dict)


class InputError(ValueError):
    """An upstream version that this model cannot train on (the message says which and why)."""


def check_lm_fits(model, tokenizer, max_len: int, what: str) -> None:
    """InputError unless a causal LM (``what`` names it) covers the tokenizer's ids and ``max_len`` positions."""
    if model.config.vocab_size < len(tokenizer):
        raise InputError(f"{what} has {model.config.vocab_size} token ids, the tokenizer {len(tokenizer)}: "
                         "they come from different tokenizer versions")
    limit = getattr(model.config, "n_positions", None)
    if limit is not None and max_len > limit:
        raise InputError(f"model.max_len={max_len} exceeds the {what}'s {limit} positions")


def read_label_list(dataset_dir: Path, what: str) -> Any:
    """The parsed ``labels.json`` of a dataset version (``what`` names its contents in the error)."""
    path = Path(dataset_dir) / "labels.json"
    if not path.is_file():
        raise InputError(f"{dataset_dir}/labels.json is missing (the ordered {what} list)")
    return json.loads(path.read_text("utf-8"))


def read_split(version_dir: Path, split: str, columns: list[str]) -> pl.DataFrame:
    f = Path(version_dir) / f"{split}.parquet"
    if not f.is_file():
        raise InputError(f"{f} is missing")
    df = pl.read_parquet(f)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{f} lacks columns {missing} (has {df.columns})")
    return df.select(columns)


def pad_collate(pad_id: int) -> Callable[[list[tuple[list[int], list[int]]]], Batch]:
    def collate(items):
        n = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), n), pad_id, dtype=torch.long)
        labels = torch.full((len(items), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), n), dtype=torch.long)
        for i, (x, y) in enumerate(items):
            ids[i, :len(x)] = torch.tensor(x)
            labels[i, :len(y)] = torch.tensor(y)
            mask[i, :len(x)] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
    return collate
