"""Resumable training state, written without pickle and read back only if it is intact.

Tensors go through safetensors and everything else through JSON, each file's sha256 in ``state.json``;
a checkpoint directory is renamed into place whole. Layout, named checkpoints and references:
DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ml.fsutil import atomic_write_json, fsync_dir, fsync_tree, sha256_file
from ml.storage_work import work_for, work_root
from ml.train.checkpoint_layout import (  # noqa: F401  (re-exported: ckpt.step_dirs, ckpt.NAMES, ...)
    NAMES, STATE, CheckpointRefError, checkpoint_dir, latest, name_link, named, step_dirs, update_names,
)

FORMAT = "lineage-forge/train-state/1"


class CheckpointError(RuntimeError):
    """A checkpoint that must not be loaded (corrupt, pickled, incomplete, or from another run)."""


def _noop() -> None:
    return None


@dataclass
class Loaded:
    step: int
    state: dict[str, Any]
    path: Path
    rank_state: dict[str, Any]  # what this rank saved for itself (e.g. its metric window)


# ---- (de)serialising pieces ---------------------------------------------------------------------
def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters by name (tied weights appear once), detached contiguous CPU copies."""
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = set(params) - set(tensors), set(tensors) - set(params)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint does not match the model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    with torch.no_grad():
        for n, p in params.items():
            if p.shape != tensors[n].shape:
                raise CheckpointError(f"checkpoint tensor {n} has shape {tuple(tensors[n].shape)}, "
                                      f"model expects {tuple(p.shape)}")
            p.copy_(tensors[n].to(p.device, p.dtype))


def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                plain.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    for idx, st in meta.get("plain", {}).items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return tensors, {"python": [py[0], list(py[1]), py[2]],
                     "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(tensors["torch"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)
    v, keys, gauss = plain["python"]
    random.setstate((v, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); refusing to load it") from exc


# ---- save / load ------------------------------------------------------------------------------------
def save_checkpoint(
    work: Path, step: int, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
    device: torch.device, rank: int = 0, world_size: int = 1, barrier: Callable[[], None] = _noop,
    rank_state: dict[str, Any] | None = None,
) -> Path | None:
    """Write step-<step>/ atomically. Every rank calls it (each writes its RNG state and ``rank_state``);
    rank 0 writes the rest and publishes."""
    root = checkpoint_dir(work)
    tmp = root / f".tmp-step-{step:08d}"
    final = root / f"step-{step:08d}"
    barrier()
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    tmp.mkdir(parents=True, exist_ok=True)  # another machine's rank (nnodes > 1): its own work dir
    rt, rp = rng_state(device)
    save_file(rt, str(tmp / f"rng-rank{rank}.safetensors"))
    atomic_write_json(tmp / f"rng-rank{rank}.json", {**rp, "rank_state": rank_state or {}})
    barrier()
    if rank == 0:
        save_file(trainable_state(model), str(tmp / "model.safetensors"))
        ot, ometa = _split_optimizer(optimizer.state_dict())
        save_file(ot, str(tmp / "optimizer.safetensors"), metadata={"format": FORMAT})
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(tmp / STATE, {**state, "format": FORMAT, "step": step, "world_size": world_size,
                                        "optimizer": ometa, "files": files})
        fsync_tree(tmp)
        if final.exists():  # the same step written again (a resumed run re-saving): replace it whole
            old = root / f".old-step-{step:08d}"
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        fsync_dir(root)
    barrier()
    return final if rank == 0 else None


def verify(path: Path) -> dict[str, Any]:
    """state.json of an intact checkpoint; CheckpointError naming the first bad file otherwise."""
    path = Path(path)
    try:
        state = json.loads((path / STATE).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / STATE} is missing or not JSON ({exc})") from exc
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (format={state.get('format')!r})")
    for name, digest in state.get("files", {}).items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f} is missing from the checkpoint")
        if sha256_file(f) != digest:
            raise CheckpointError(f"{f} is corrupted (sha256 differs from {STATE}); refusing to load it")
    for f in path.iterdir():
        if f.name not in state.get("files", {}) and f.name != STATE:
            raise CheckpointError(f"{f} is not part of the checkpoint written by the loop; refusing to load it")
    return state


def load_checkpoint(
    path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device,
    rank: int = 0, world_size: int = 1,
) -> Loaded:
    """Restore model, optimizer and this rank's RNGs in place; return the rest of the state."""
    path = Path(path)
    state = verify(path)
    if state.get("world_size", 1) != world_size:
        raise CheckpointError(f"{path} was written by {state.get('world_size')} processes, this run has {world_size}")
    load_trainable(model, _read_safetensors(path / "model.safetensors"))
    if optimizer is not None:
        tensors = _read_safetensors(path / "optimizer.safetensors")
        optimizer.load_state_dict(_join_optimizer(tensors, state["optimizer"]))
    rng_t = _read_safetensors(path / f"rng-rank{rank}.safetensors")
    rng_p = json.loads((path / f"rng-rank{rank}.json").read_text("utf-8"))
    set_rng_state(rng_t, rng_p, device)
    return Loaded(int(state["step"]), state, path, rng_p.get("rank_state") or {})


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Only the model weights of a checkpoint (e.g. the best one, for export)."""
    verify(path)
    load_trainable(model, _read_safetensors(Path(path) / "model.safetensors"))


def prune(work: Path, keep_last: int, keep_steps: set[int] = frozenset()) -> list[int]:
    """Delete all but the last ``keep_last`` checkpoints and those in keep_steps (the best). Returns removed steps."""
    found = step_dirs(work)
    keep = {s for s, _ in found[-keep_last:]} | set(keep_steps)
    removed = []
    for s, p in found:
        if s not in keep:
            shutil.rmtree(p)
            removed.append(s)
    for stale in checkpoint_dir(work).glob(".tmp-step-*"):  # left by a kill mid-save
        shutil.rmtree(stale, ignore_errors=True)
    return removed


# ---- named checkpoints: checkpoint-latest, checkpoint-best (names and links: checkpoint_layout.py) --------
def adopt(source: Path, work: Path) -> Path:
    """Bring a checkpoint of another run into ``work`` (its step, and the step its state calls best,
    when that one is beside it), so this run resumes, names and prunes only its own directories.
    Files are hard-linked when possible (checkpoint files are never modified in place), else copied;
    each step directory appears whole or not at all."""
    source = Path(source).resolve()
    state = verify(source)
    steps = [(int(state["step"]), source)]
    best = (state.get("best") or {}).get("step")
    if best is not None and int(best) != int(state["step"]):
        other = source.parent / f"step-{int(best):08d}"
        if (other / STATE).is_file():
            verify(other)
            steps.append((int(best), other))
    root = checkpoint_dir(work)
    root.mkdir(parents=True, exist_ok=True)
    for step, src in steps:
        final = root / f"step-{step:08d}"
        if final.exists():
            continue
        tmp = root / f".tmp-step-{step:08d}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for f in src.iterdir():
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
        fsync_tree(tmp)
        os.rename(tmp, final)
    fsync_dir(root)
    update_names(work, int(best) if best is not None else None)
    return root / f"step-{int(state['step']):08d}"


@dataclass
class CheckpointRef:
    """A resolved train.resume_from / train.init_from: the step directory and where it came from."""

    ref: str  # as written in the config
    path: Path  # the step-<N> directory (symlinks resolved)
    step: int
    name: str | None  # latest | best, when named
    asset: str | None = None  # the stored version whose training wrote it, when known
    data_version: str | None = None
    state_sha256: str = ""  # digest of its state.json (which lists the digest of every file)

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "path": str(self.path), "step": self.step, "name": self.name, "asset": self.asset,
                "data_version": self.data_version, "state_sha256": self.state_sha256}


def _strip_name(text: str) -> str | None:
    t = text.removeprefix("checkpoint-")
    return t if t in NAMES else None


def _from_step_dir(ref: str, path: Path, name: str | None, store=None) -> CheckpointRef:
    path = Path(path).resolve()
    try:
        state = verify(path)
    except CheckpointError as exc:
        raise CheckpointRefError(f"{ref!r}: {exc}") from exc
    out = CheckpointRef(ref, path, int(state["step"]), name, state_sha256=sha256_file(path / STATE))
    if store is not None:  # <home>/work/<asset>/<fingerprint>/checkpoints/step-N: which stored version?
        try:
            rel = path.relative_to(work_root(store.home).resolve())  # local, or a pulled mirror of an s3 home
        except ValueError:
            rel = None
        if rel is not None and len(rel.parts) == 4 and rel.parts[2] == "checkpoints":
            try:
                found = store.lookup(rel.parts[0], rel.parts[1], verify=False)
            except Exception:  # a name the store refuses (not an asset or fingerprint): no version to cite
                found = None
            if found is not None:
                out.asset, out.data_version = found.asset, found.data_version
    return out


def _version_work(store, asset: str, version) -> Path:
    fp = version.manifest.get("fingerprint")
    if not fp:
        raise CheckpointRefError(f"{asset}@{version.data_version}: its manifest records no fingerprint, so its "
                                 "training work directory is unknown")
    return work_for(store.home, asset, fp)  # ml/storage_work.py: an s3 home's checkpoints pulled first


def resolve_ref(ref: str, *, asset: str, store=None) -> CheckpointRef:
    """The step checkpoint a reference names. Accepted forms:

    - ``latest`` | ``best`` (or ``checkpoint-latest`` | ``checkpoint-best``): that checkpoint of the
      newest stored version of ``asset`` whose work directory still has it;
    - ``ASSET@VERSION[:latest|:best]`` (a unique version prefix works; default ``best``): that checkpoint
      of another stored version, e.g. ``lm_checkpoint@3f2a91c0:best``;
    - a path: a ``step-<N>`` directory, a ``checkpoint-latest``/``checkpoint-best`` link, or a training
      work directory (its ``checkpoint-latest``).
    """
    text = (ref or "").strip()
    if not text:
        raise CheckpointRefError("empty checkpoint reference")
    name = _strip_name(text)
    if name is not None:
        if store is None:
            raise CheckpointRefError(f"{ref!r} names a checkpoint of a stored version: no artifact store given")
        for version in reversed(store.versions(asset)):
            try:
                found = named(_version_work(store, asset, version), name)
            except CheckpointRefError:
                continue
            if found is not None:
                out = _from_step_dir(ref, found, name, store)
                out.asset, out.data_version = asset, version.data_version
                return out
        raise CheckpointRefError(f"{ref!r}: no stored version of {asset} has a checkpoint-{name} in its work directory "
                                 f"(under {work_root(store.home) / asset})")
    head, sep, tail = text.partition("@")
    if sep and "/" not in head and re.fullmatch(r"[a-z][a-z0-9_]*", head):
        version_part, _, nm = tail.partition(":")
        name = _strip_name(nm) if nm else "best"
        if name is None:
            raise CheckpointRefError(f"{ref!r}: after ':' expected latest or best, got {nm!r}")
        if store is None:
            raise CheckpointRefError(f"{ref!r} names a stored version: no artifact store given")
        matches = [v for v in store.versions(head) if v.data_version.startswith(version_part)] if version_part else []
        if len(matches) != 1:
            raise CheckpointRefError(f"{ref!r}: {'no' if not matches else 'more than one'} stored version of {head} "
                                     f"starts with {version_part!r}")
        work = _version_work(store, head, matches[0])
        found = named(work, name)
        if found is None:
            raise CheckpointRefError(f"{ref!r}: {work} has no checkpoint-{name} (its training state was deleted, or "
                                     "it was trained before named checkpoints existed)")
        out = _from_step_dir(ref, found, name, store)
        out.asset, out.data_version = head, matches[0].data_version
        return out
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointRefError(f"{ref!r}: no such checkpoint directory")
    if (path / STATE).is_file():
        return _from_step_dir(ref, path, _strip_name(path.name) if path.is_symlink() else None, store)
    found = named(path, "latest")
    if found is None:
        raise CheckpointRefError(f"{ref!r} is neither a step checkpoint (no {STATE}) nor a training work directory "
                                 "with checkpoint-latest")
    return _from_step_dir(ref, found, "latest", store)
