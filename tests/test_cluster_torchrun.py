"""torchrun across machines: two "nodes" on 127.0.0.1 (each its own torchrun, own work dir; gloo, static
rendezvous at node 0) train the same weights as one process with the same global batch."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ml.train.config import DeviceSettings, LoopSettings
from ml.train.run import TrainSpec, launch
from tests.servers import free_port
from tests.helpers.training import TINY, inputs  # noqa: F401  (module fixture)


def _spec(inputs, root: Path, train: dict) -> TrainSpec:  # noqa: F811
    cfg = {**TINY["lm_checkpoint"], "train": {**TINY["lm_checkpoint"]["train"], "max_steps": 20, **train}}
    return TrainSpec(asset="lm_checkpoint", settings=cfg, inputs=inputs, out_dir=str(root / "out"),
                     work_dir=str(root / "work"), device=DeviceSettings(device="cpu", seed=0, threads=1))


def test_two_nodes_match_one_process(inputs, tmp_path):  # noqa: F811
    batch = TINY["lm_checkpoint"]["train"]["batch_size"]
    single = launch(_spec(inputs, tmp_path / "single", {"batch_size": 2 * batch}), log=lambda m: None)

    endpoint = f"127.0.0.1:{free_port()}"
    results: dict[int, dict] = {}
    errors: list[BaseException] = []
    lines: dict[int, list[str]] = {0: [], 1: []}

    def node(rank: int) -> None:
        try:
            spec = _spec(inputs, tmp_path / f"node{rank}",
                         {"batch_size": batch, "nnodes": 2, "node_rank": rank, "rdzv_endpoint": endpoint})
            results[rank] = launch(spec, log=lines[rank].append)
        except BaseException as exc:  # noqa: BLE001 (re-raised below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=node, args=(r,)) for r in (1, 0)]  # node 1 may come first
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert any("--nnodes=2" in l and "--node_rank=1" in l and endpoint in l for l in lines[1])
    assert results[1] == {"node_rank": 1, "nnodes": 2, "world_size": 2}
    two = results[0]
    assert two["world_size"] == 2 and two["effective_batch_size"] == single["effective_batch_size"] == 2 * batch
    assert two["steps"] == single["steps"] == 20
    # node 0 wrote the version; node 1 wrote none (its out dir stays empty)
    assert not (tmp_path / "node1" / "out").exists()
    a = load_file(str(tmp_path / "single" / "out" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "node0" / "out" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    # the same examples in every step, gradients averaged over the two nodes instead of over one batch:
    # equal up to float32 summation order
    assert worst < 1e-4, worst
    assert abs(two["final_train_loss"] - single["final_train_loss"]) < 1e-4


def test_multi_node_settings_are_checked():
    assert LoopSettings().nnodes == 1 and LoopSettings().rdzv_endpoint is None  # standalone by default
    with pytest.raises(ValueError, match="rdzv_endpoint HOST:PORT"):
        LoopSettings(nnodes=2)
    with pytest.raises(ValueError, match="node_rank 2 must be smaller than nnodes 2"):
        LoopSettings(nnodes=2, node_rank=2, rdzv_endpoint="10.0.0.1:29500")
    LoopSettings(nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29500")
