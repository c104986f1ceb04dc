"""torchrun / DDP plumbing: the loop runs unchanged with one process or many.

Under ``torchrun`` (RANK, LOCAL_RANK, WORLD_SIZE in the environment) ``init()`` joins the
process group: NCCL on CUDA, gloo on the CPU. Each rank reads its own shard of every epoch's
permutation (``ShardedSampler``); only rank 0 writes checkpoints and outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env() -> DistEnv:
    return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))


def init(device_type: str) -> DistEnv:
    """Join the process group when launched by torchrun (no-op for a single process)."""
    e = env()
    if e.distributed and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return e


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def sum_(values: torch.Tensor) -> torch.Tensor:
    """Sum a float tensor over ranks (returns the local tensor for one process)."""
    if active():
        home = values.device
        if dist.get_backend() == "nccl":  # NCCL reduces only CUDA tensors
            values = values.to(torch.device("cuda", torch.cuda.current_device()))
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values.to(home)
    return values


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision, shared so that every rank takes the same branch (e.g. 'save now')."""
    if not active():
        return flag
    t = torch.tensor([1 if flag else 0], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


class ShardedSampler:
    """Deterministic batches: epoch e is a permutation seeded by (seed, e), rank r takes every W-th index.

    The data position is the number of micro-batches consumed, so a resumed run continues
    exactly where the checkpoint left off without replaying anything.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        per_rank = n // world_size
        self.batches_per_epoch = per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"the train split has {n} examples: too few for batch_size {batch_size} "
                             f"x {world_size} process(es)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._epoch, self._order = -1, None

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g)
            self._order = perm[self.rank::self.world_size][: self.batches_per_epoch * self.batch_size]
            self._epoch = epoch
        return self._order

    def batch(self, micro_step: int) -> list[int]:
        epoch, i = divmod(micro_step, self.batches_per_epoch)
        order = self._epoch_order(epoch)
        return order[i * self.batch_size:(i + 1) * self.batch_size].tolist()

    def epoch_of(self, micro_step: int) -> int:
        return micro_step // self.batches_per_epoch
