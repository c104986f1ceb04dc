"""What every task builder shares (tasks.py, dpo.py): ``Built`` (the Task, its ``save`` and data stats),
``InputError``, ``read_split`` (one split of a dataset version, with the columns checked) and
``pad_collate`` (right-padded ids with ``IGNORE`` labels). Its own module so that dpo.py does not
import tasks.py, whose ``BUILDERS`` registry imports dpo.py."""

from __future__ import annotations

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
