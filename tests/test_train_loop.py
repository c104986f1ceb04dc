"""The shared loop: schedule, checkpoints (keep-last-K + best, refused when corrupt or pickled),
and kill-and-resume ending with exactly the weights of an uninterrupted run (CPU, fixed seed)."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ml.train import checkpointing as ckpt
from ml.train.config import DeviceSettings, LoopSettings
from ml.train.loop import KILL_ENV, lr_lambda
from tests.helpers.training import RESUME_CFG, inputs  # noqa: F401  (module fixture: tiny upstream versions)
from tests.helpers.training import TINY_LOOP, train_one

REPO = Path(__file__).resolve().parents[1]
def test_lr_schedule_warmup_then_cosine_to_floor():
    f = lr_lambda(warmup=10, total=100, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.55)
    assert f(100) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def _spec_file(tmp: Path, inputs: dict, out: Path, work: Path) -> Path:
    from ml.train.run import TrainSpec

    spec = TrainSpec(asset="lm_checkpoint", settings=RESUME_CFG, inputs=inputs, out_dir=str(out), work_dir=str(work),
                     device=DeviceSettings(device="cpu", seed=7, threads=1))
    path = tmp / "spec.json"
    path.write_text(spec.model_dump_json())
    return path


def _losses(out: Path) -> list[tuple[int, str, float]]:
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["split"], r["value"]) for r in rows if r["metric"] == "loss"]


def test_kill_and_resume_gives_identical_weights(inputs, tmp_path):  # noqa: F811
    # uninterrupted
    ref_out = tmp_path / "ref"
    ref = train_one("lm_checkpoint", RESUME_CFG, inputs, ref_out, tmp_path / "ref_work",
                    DeviceSettings(device="cpu", seed=7, threads=1))
    assert ref["resumed_from_step"] is None and ref["steps"] == 40

    # a real process SIGKILLed at step 15 (after the step-10 checkpoint, before step 20's)
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, KILL_ENV: "15", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ml.train", str(_spec_file(tmp_path, inputs, out, work))],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [s for s, _ in ckpt.step_dirs(work)] == [10] and not out.exists()

    resumed = train_one("lm_checkpoint", RESUME_CFG, inputs, out, work, DeviceSettings(device="cpu", seed=7, threads=1))
    assert resumed["resumed_from_step"] == 10 and resumed["steps"] == 40
    a = load_file(str(ref_out / "model" / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(ref_out) == _losses(out)  # same history, including the steps before the kill
    # keep_last=1, plus the best (lowest val loss) if it is another step
    kept = [s for s, _ in ckpt.step_dirs(work)]
    assert kept[-1] == 40 and len(kept) <= 2


def _tiny_state(tmp_path: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer, Path]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt, tmp_path / "work"


def _save(model, opt, work, step, best=None):
    return ckpt.save_checkpoint(work, step, model=model, optimizer=opt, device=torch.device("cpu"),
                                state={"micro_step": step, "history": [], "best": best, "scheduler": {}})


def test_checkpoint_roundtrip_and_keep_last_k_plus_best(tmp_path):
    model, opt, work = _tiny_state(tmp_path)
    for step in (10, 20, 30, 40):
        _save(model, opt, work, step, best={"metric": "loss", "value": 1.0, "step": 20})
        ckpt.prune(work, keep_last=2, keep_steps={20})
    assert [s for s, _ in ckpt.step_dirs(work)] == [20, 30, 40]
    after_save = (torch.rand(3), random.random(), float(np.random.rand()))  # draws right after step 40's save
    torch.manual_seed(1)
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    loaded = ckpt.load_checkpoint(ckpt.latest(work), model=other, optimizer=other_opt, device=torch.device("cpu"))
    assert loaded.step == 40
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], other_opt.state_dict()["state"][0]["exp_avg"])
    again = (torch.rand(3), random.random(), float(np.random.rand()))  # torch, python and numpy RNGs restored
    assert torch.equal(after_save[0], again[0]) and after_save[1:] == again[1:]
    assert json.loads((ckpt.latest(work) / "state.json").read_text())["files"]["model.safetensors"]


def test_corrupted_checkpoint_is_refused(tmp_path):
    model, opt, work = _tiny_state(tmp_path)
    path = _save(model, opt, work, 5)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # one flipped bit in the tensor bytes: still parses, but is not what was written
    os.chmod(path / "model.safetensors", 0o644)
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="corrupted"):
        ckpt.load_checkpoint(path, model=model, optimizer=opt, device=torch.device("cpu"))


def test_pickled_checkpoint_is_refused_and_never_unpickled(tmp_path):
    model, opt, work = _tiny_state(tmp_path)
    path = _save(model, opt, work, 5)
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps({"weight": Boom()})
    # 1) a pickle where the weights should be (digest in state.json updated, as an attacker would)
    (path / "model.safetensors").write_bytes(payload)
    state = json.loads((path / "state.json").read_text())
    state["files"]["model.safetensors"] = ckpt.sha256_file(path / "model.safetensors")
    (path / "state.json").write_text(json.dumps(state))
    with pytest.raises(ckpt.CheckpointError, match="not a valid safetensors file"):
        ckpt.load_checkpoint(path, model=model, optimizer=opt, device=torch.device("cpu"))
    # 2) an extra torch.save file dropped beside the checkpoint
    torch.save({"x": 1}, path / "extra.pt")
    with pytest.raises(ckpt.CheckpointError, match="not part of the checkpoint"):
        ckpt.load_checkpoint(path, model=model, optimizer=opt, device=torch.device("cpu"))
    assert not marker.exists()


def test_loop_refuses_resume_from_corrupt_state(inputs, tmp_path):  # noqa: F811
    cfg = {**RESUME_CFG, "train": {**RESUME_CFG["train"], "max_steps": 10}}
    work = tmp_path / "work"
    train_one("lm_checkpoint", cfg, inputs, tmp_path / "a", work)
    last = ckpt.latest(work)
    (last / "state.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="state.json"):
        train_one("lm_checkpoint", cfg, inputs, tmp_path / "b", work)


def test_loop_settings_name_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="batch_size"):
        LoopSettings(batch_size=0)
    with pytest.raises(ValidationError, match="warmup_steps"):
        LoopSettings(max_steps=5, warmup_steps=5)


def test_export_best_publishes_the_best_checkpoint(inputs, tmp_path):  # noqa: F811
    # a tiny LM first learns "predict the frequent tokens": its top-1 accuracy peaks at the first
    # evaluation while the loss keeps falling, so best-by-accuracy (step 10) != last (step 30)
    cfg = {**RESUME_CFG, "train": {**RESUME_CFG["train"], "max_steps": 30, "grad_accum_steps": 1, "keep_last": 1,
                                   "export": "best", "best_metric": "token_accuracy", "best_mode": "max"}}
    out, work = tmp_path / "out", tmp_path / "work"
    summary = train_one("lm_checkpoint", cfg, inputs, out, work, DeviceSettings(device="cpu", seed=7, threads=1))
    assert summary["best"]["step"] == 10 and summary["exported_weights"] == "best (step 10)"
    assert [s for s, _ in ckpt.step_dirs(work)] == [10, 30]  # the last one, and the best kept beside it
    published = load_file(str(out / "model" / "model.safetensors"))
    best = load_file(str(ckpt.checkpoint_dir(work) / "step-00000010" / "model.safetensors"))
    assert all(torch.equal(published[k], best[k]) for k in best)
    val10 = {r["metric"]: r["value"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "val" and r["step"] == 10}
    assert summary["val"] == val10  # the metrics of the published weights
