"""Where the training state lies in a work directory, and its names (no torch: ml/storage_work.py
renews the names after pulling checkpoints from a bucket; checkpointing.py re-exports all of this).

``<work>/checkpoints/step-<N>/`` is complete once its ``state.json`` exists (it is renamed into place);
``<work>/checkpoint-latest`` and ``<work>/checkpoint-best`` are relative symlinks to such directories,
re-pointed atomically."""

from __future__ import annotations

import os
from pathlib import Path

from ml.fsutil import fsync_dir

STATE = "state.json"


def checkpoint_dir(work: Path) -> Path:
    return Path(work) / "checkpoints"


def step_dirs(work: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (renamed into place), oldest first."""
    root = checkpoint_dir(work)
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if child.name.startswith("step-") and (child / STATE).is_file():
            try:
                out.append((int(child.name[5:]), child))
            except ValueError:
                continue
    return sorted(out)


def latest(work: Path) -> Path | None:
    found = step_dirs(work)
    return found[-1][1] if found else None


# ---- named checkpoints: checkpoint-latest, checkpoint-best ------------------------------------------
NAMES = ("latest", "best")


class CheckpointRefError(ValueError):
    """A train.resume_from / train.init_from reference that names no usable checkpoint (message says why)."""


def name_link(work: Path, name: str) -> Path:
    """``<work>/checkpoint-<name>``: a relative symlink to ``checkpoints/step-<N>``."""
    if name not in NAMES:
        raise CheckpointRefError(f"checkpoint name {name!r}: expected one of {NAMES}")
    return Path(work) / f"checkpoint-{name}"


def _point(work: Path, name: str, step_dir: Path) -> None:
    """Atomically (re)point checkpoint-<name> at step_dir (a symlink renamed over the old one)."""
    link = name_link(work, name)
    target = os.path.relpath(step_dir, link.parent)
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)


def update_names(work: Path, best_step: int | None) -> None:
    """checkpoint-latest -> the newest step, checkpoint-best -> ``best_step`` (when it is on disk here)."""
    newest = latest(work)
    if newest is not None:
        _point(work, "latest", newest)
    if best_step is not None:
        best_dir = checkpoint_dir(work) / f"step-{best_step:08d}"
        if (best_dir / STATE).is_file():
            _point(work, "best", best_dir)
    fsync_dir(Path(work))


def named(work: Path, name: str) -> Path | None:
    """The step directory checkpoint-<name> points at, or None."""
    link = name_link(work, name)
    if not link.is_symlink() and not link.is_dir():
        return None
    path = link.resolve()
    return path if (path / STATE).is_file() else None
