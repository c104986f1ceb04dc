"""Early stopping (patience, min_delta on the validation metric), the gradient norm of every step,
and throughput / peak memory kept out of the content rows (run facts)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ml.train.config import DeviceSettings, LoopSettings
from ml.train.device import resolve
from ml.train.loop import Task, train


def _task(val_values: list[float] | None = None, n: int = 64) -> Task:
    """A linear regression on one repeated example; ``evaluate`` reports the scripted ``val_values`` in turn."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.arange(4, dtype=torch.float32)
    calls = {"n": 0}

    def evaluate(m, batches):
        list(batches)
        v = val_values[min(calls["n"], len(val_values) - 1)] if val_values else 0.0
        calls["n"] += 1
        return {"loss": v}

    return Task("toy", model, [x] * n, [x] * 4, lambda items: {"x": torch.stack(items)},
                lambda m, b: ((m(b["x"]) - 1.0) ** 2).mean(), evaluate, count=lambda b: (b["x"].shape[0], 4))


def _cfg(**kw) -> LoopSettings:
    base = dict(max_steps=40, batch_size=4, lr=0.01, warmup_steps=1, eval_every=5, eval_batches=1, save_every=100,
                log_every=5)
    return LoopSettings(**{**base, **kw})



@pytest.fixture(scope="module")
def rt():
    return resolve(DeviceSettings(device="cpu", seed=0, threads=1), 0, 1, rank=0)


def test_stops_after_patience_evaluations_without_a_min_delta_improvement(rt):
    # evals at 5, 10, ...: 1.0 (ref), 0.95 (0.05 < min_delta: 1 bad), 0.85 (0.15 > 0.1: new ref), 0.80 (1 bad),
    # 0.76 (2 bad: stop at step 25); best (any improvement) is step 25's 0.76
    r = train(_task([1.0, 0.95, 0.85, 0.80, 0.76, 0.1]), _cfg(early_stopping_patience=2, early_stopping_min_delta=0.1),
              rt, log=lambda m: None)
    es = r.summary["early_stopping"]
    assert r.summary["steps"] == 25 and es["stopped_at_step"] == 25 and es["best_step"] == 25
    assert es["patience"] == 2 and es["min_delta"] == 0.1 and es["metric"] == "loss"


def test_an_improvement_of_exactly_min_delta_does_not_count(rt):
    # 0.75 - 0.5 = 0.25 (binary-exact) is not > 0.25: two bad evaluations in a row at 10 and 15
    exact = train(_task([0.75, 0.5, 0.5, 0.0]), _cfg(early_stopping_patience=2, early_stopping_min_delta=0.25),
                  rt, log=lambda m: None)
    assert exact.summary["early_stopping"]["stopped_at_step"] == 15
    # just past it resets the count: 0.75 -> 0.49 improves by 0.26, then 0.49, 0.49 stop at 20
    past = train(_task([0.75, 0.49, 0.49, 0.49, 0.0]), _cfg(early_stopping_patience=2, early_stopping_min_delta=0.25),
                 rt, log=lambda m: None)
    assert past.summary["early_stopping"]["stopped_at_step"] == 20


def test_patience_zero_trains_every_step(rt):
    r = train(_task([1.0]), _cfg(max_steps=20), rt, log=lambda m: None)
    assert r.summary["steps"] == 20 and r.summary["early_stopping"]["stopped_at_step"] is None


def test_grad_norm_of_every_step_and_no_throughput_in_the_content_rows(rt):
    task = _task([1.0])
    ref = nn.Linear(4, 1)
    ref.load_state_dict(task.model.state_dict())
    x = torch.arange(4, dtype=torch.float32).repeat(4, 1)
    ((ref(x) - 1.0) ** 2).mean().backward()
    expected = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ref.parameters()))
    r = train(task, _cfg(max_steps=10, max_grad_norm=0.5), rt, log=lambda m: None)
    norms = [m for m in r.metrics if m["metric"] == "grad_norm"]
    assert [m["step"] for m in norms] == list(range(1, 11))
    assert norms[0]["value"] == pytest.approx(expected, rel=1e-5) and expected > 0.5  # the norm before clipping
    assert not {m["metric"] for m in r.metrics} & {"tokens_per_s", "samples_per_s", "peak_memory_mb"}
    steps = [f for f in r.step_facts if "tokens_per_s" in f]
    evals = [f for f in r.step_facts if "peak_memory_mb" in f]
    assert [f["step"] for f in steps] == list(range(1, 11)) and all(f["tokens_per_s"] > 0 for f in steps)
    assert [f["step"] for f in evals] == [5, 10]
