"""TorchDevice: the hardware resource of training and export steps (a thin shell over ml/train/device.py)."""

from __future__ import annotations

import resource
import sys
from typing import Any

import dagster as dg

from ml.train.config import ConfigError, DeviceSettings
from resources.dagster_config import dagster_config


class TorchDevice(dagster_config(DeviceSettings, "TorchDeviceFields", base=dg.ConfigurableResource)):
    """Device, precision, seed and determinism for torch steps (fields: ml/train/config.py DeviceSettings).

    Every materialization that uses it records the device name and peak memory in its metadata
    (``materialization_metadata``). A GPU profile on a machine without a GPU fails the step with a
    message naming the field (``lineage validate-config`` says so before the run).
    """

    def settings(self) -> DeviceSettings:
        """The validated settings, refused (dg.Failure naming the field) when the hardware is missing."""
        try:
            s = DeviceSettings(device=self.device, precision=self.precision, seed=self.seed,
                               deterministic=self.deterministic, threads=self.threads)
            s.check_available()
        except (ValueError, ConfigError) as exc:
            raise dg.Failure(f"torch_device: {exc}") from exc
        return s

    def materialization_metadata(self, trained: dict[str, Any] | None = None) -> dict[str, Any]:
        """Device name and peak memory of this step (and of the training processes, if they ran elsewhere)."""
        s = self.settings()
        if s.device == "cpu" and "torch" not in sys.modules:
            # this process ran no torch code (a cache hit in a fresh step): say so without importing torch
            device, peak = "cpu (torch not loaded)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        else:
            import torch

            from ml.train.device import device_name, peak_memory_mb

            dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if s.device == "auto" else s.device)
            device, peak = device_name(dev), peak_memory_mb(dev)
        md: dict[str, Any] = {
            "device": device,
            "precision": s.precision,
            "seed": s.seed,
            "peak_memory_mb": dg.MetadataValue.float(round(peak, 1)),
        }
        if trained:
            md["trained_on"] = str(trained.get("device"))
            if trained.get("peak_memory_mb") is not None:
                md["training_peak_memory_mb"] = dg.MetadataValue.float(float(trained["peak_memory_mb"]))
        return md
