"""Device, precision, seeds and peak memory for training (no Dagster; the resource wraps this)."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ml.train.config import ConfigError, DeviceSettings

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    """A resolved device: what the loop needs to place tensors and choose autocast."""

    settings: DeviceSettings
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def precision(self) -> str:
        return self.settings.precision

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """Autocast dtype, or None for plain fp32."""
        return None if self.settings.precision == "fp32" else DTYPES[self.settings.precision]

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def name(self) -> str:
        return device_name(self.device)

    def peak_memory_mb(self) -> float:
        return peak_memory_mb(self.device)


def resolve(settings: DeviceSettings, local_rank: int = 0, world_size: int = 1, rank: int | None = None) -> Runtime:
    """Pick the torch device (refusing a GPU profile without a GPU) and make the run deterministic if asked.

    ``rank`` is the global rank (default: ``local_rank``, i.e. one node)."""
    settings.check_available()
    if world_size > 1 and ":" in settings.device:
        raise ConfigError(f"device: {settings.device!r} pins every one of the {world_size} processes to one GPU; "
                          "use cuda or auto (rank r takes cuda:r)")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.device == "auto":
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    elif settings.device == "cuda":
        dev = torch.device(f"cuda:{local_rank}")
    else:
        dev = torch.device(settings.device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    if settings.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(settings, dev, local_rank if rank is None else rank, world_size)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def device_name(device: torch.device) -> str:
    """How a device is reported: ``cuda:0 (NVIDIA H200)`` or ``cpu (8 threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak CUDA memory allocated on a GPU; peak resident set size of this process on the CPU."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
