"""The same loop under torchrun DDP: 2 CPU processes, gloo, sharded batches, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ml.train import checkpointing as ckpt
from ml.train.checkpoint_checks import loss_fell, read_metrics
from ml.train.config import DeviceSettings
from ml.train.run import TrainSpec, launch
from tests.helpers.training import TINY, inputs  # noqa: F401  (module fixture)

REPO = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_processes(inputs, tmp_path):  # noqa: F811
    cfg = {**TINY["lm_checkpoint"], "train": {**TINY["lm_checkpoint"]["train"], "nproc_per_node": 2}}
    out, work = tmp_path / "out", tmp_path / "work"
    spec = TrainSpec(asset="lm_checkpoint", settings=cfg, inputs=inputs, out_dir=str(out), work_dir=str(work),
                     device=DeviceSettings(device="cpu", seed=0, threads=1))
    lines: list[str] = []
    summary = launch(spec, log=lines.append)  # python -m torch.distributed.run --standalone --nproc_per_node=2 -m ml.train
    assert any("torch.distributed.run" in l and "--nproc_per_node=2" in l for l in lines)
    assert summary["world_size"] == 2 and summary["effective_batch_size"] == 2 * cfg["train"]["batch_size"]
    assert summary["steps"] == cfg["train"]["max_steps"]
    assert loss_fell(read_metrics(out), 0.05).passed
    assert (out / "model" / "model.safetensors").is_file()  # written once, by rank 0
    last = ckpt.latest(work)
    assert {"rng-rank0.safetensors", "rng-rank1.safetensors"} <= {p.name for p in last.iterdir()}
    assert json.loads((last / "state.json").read_text())["world_size"] == 2
    # progress lines come from rank 0 only
    assert sum(l.startswith("[lm] step 30/30") for l in lines) == 1


def test_torchrun_worker_failure_is_reported(inputs, tmp_path):  # noqa: F811
    cfg = {**TINY["lm_checkpoint"], "train": {**TINY["lm_checkpoint"]["train"], "nproc_per_node": 2}}
    spec = TrainSpec(asset="lm_checkpoint", settings=cfg, inputs={**inputs, "tokenized_corpus": str(tmp_path / "nope")},
                     out_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"),
                     device=DeviceSettings(device="cpu", threads=1))
    try:
        launch(spec, log=lambda m: None)
    except RuntimeError as exc:
        assert "torchrun with 2 processes failed" in str(exc) and "index.json" in str(exc)
    else:
        raise AssertionError("a failing worker must fail the launch")
