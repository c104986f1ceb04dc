"""The sparse MoE LM (lm_checkpoint, model.arch: mixtral): router losses, expert utilisation metrics per
eval, the expert-collapse check at its floor, equal active parameters, and ONNX export with parity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ml.train import moe
from ml.train.checkpoint_checks import EXPERTS_OK, evaluate, experts_ok
from ml.train.config import LMCheckpointSettings, LMModel
from tests.helpers.training import TINY, inputs, train_one  # noqa: F401  (fixture)

MOE = {"model": {**TINY["lm_checkpoint"]["model"], "arch": "mixtral",
                 "moe": {"num_experts": 4, "experts_per_token": 2, "router_aux_loss_coef": 0.02}},
       "train": TINY["lm_checkpoint"]["train"]}


@pytest.fixture(scope="module")
def moe_version(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("moe") / "v"
    train_one("lm_checkpoint", MOE, inputs, out)
    return out


def test_moe_lm_trains_logs_router_losses_and_utilisation_and_reloads(moe_version):
    from ml.train.models import load_lm

    summary = json.loads((moe_version / "summary.json").read_text())
    assert summary["final_train_loss"] < 0.8 * summary["first_train_loss"]
    val = summary["val"]
    assert {"loss", "perplexity", "aux_loss", "z_loss", "experts_used", "min_expert_load"} <= set(val)
    for layer in (0, 1):  # shares of each layer's routing assignments sum to 1
        assert sum(val[f"expert_share.l{layer}.e{e}"] for e in range(4)) == pytest.approx(1.0)
    assert val["aux_loss"] >= 1.0 - 1e-6  # E * sum f_e P_e is 1 at perfect balance and above otherwise
    rows = [json.loads(l) for l in (moe_version / "metrics.jsonl").read_text().splitlines()]
    evals = sorted({r["step"] for r in rows if r["split"] == "val" and r["metric"] == "aux_loss"})
    assert evals == [10, 20, 30]  # every evaluation
    model, _ = load_lm(moe_version)
    assert type(model).__name__ == "MixtralForCausalLM" and model.config.num_local_experts == 4
    assert model.config.router_z_loss_coef == 0.001
    names = [o.name for o in evaluate(moe_version, LMCheckpointSettings.model_validate(MOE).checks)]
    assert names == ["training_loss_fell", "val_metrics_ok", EXPERTS_OK]


def test_router_z_loss_and_aux_loss_values():
    logits = (torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0, 0.0]]),)
    expected = (np.log(4) ** 2 + np.log(5) ** 2) / 2
    assert float(moe.router_z_loss(logits)) == pytest.approx(expected, rel=1e-5)
    balanced = (torch.eye(4) * 10,)  # each token strongly to its own expert, top-1
    assert float(moe.aux_loss(balanced, 4, 1)) == pytest.approx(1.0, abs=1e-3)
    collapsed = (torch.tensor([[10.0, 0, 0, 0]] * 4),)
    assert float(moe.aux_loss(collapsed, 4, 1)) == pytest.approx(4.0, abs=1e-2)


def _summary(shares: list[list[float]]) -> dict:
    return {"val": {f"expert_share.l{l}.e{e}": s for l, row in enumerate(shares) for e, s in enumerate(row)}}


def test_expert_collapse_check_at_its_floor():
    # 4 experts, fair share 0.25; "used" = at least 10% of it = 0.025
    healthy = _summary([[0.3, 0.3, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25]])
    assert experts_ok(healthy, True, 0.5, 0.1).passed
    # exactly half the (layer, expert) pairs used: passes at floor 0.5, fails just above it
    half = _summary([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    assert experts_ok(half, True, 0.5, 0.1).passed and not experts_ok(half, True, 0.51, 0.1).passed
    # an expert with 0.025 is used (at the threshold), one with 0.024 is not
    edge = _summary([[0.025, 0.975, 0.0, 0.0]])
    assert experts_ok(edge, True, 0.5, 0.1).passed
    assert not experts_ok(_summary([[0.024, 0.976, 0.0, 0.0]]), True, 0.5, 0.1).passed
    collapsed = _summary([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    out = experts_ok(collapsed, True, 0.5, 0.1)
    assert not out.passed and "2/8" in out.details
    assert not experts_ok({"val": {"loss": 1.0}}, True, 0.5, 0.1).passed  # MoE without shares: fail
    assert experts_ok({"val": {"loss": 1.0}}, False, 0.5, 0.1).passed  # dense LM


def test_equal_active_parameters_by_default():
    from ml.train.models import build_lm

    class Tok:
        pad_token_id, bos_token_id, eos_token_id = 0, 2, 3

        def __len__(self):
            return 300

    dense = LMModel(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256)
    sparse = LMModel(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, arch="mixtral",
                     moe={"num_experts": 8, "experts_per_token": 2})
    d, m = build_lm(dense, Tok()), build_lm(sparse, Tok())
    assert m.config.intermediate_size == 128
    experts = sum(p.numel() for n, p in m.named_parameters() if ".experts." in n)
    router = sum(p.numel() for n, p in m.named_parameters() if ".gate." in n)
    active = sum(p.numel() for p in m.parameters()) - experts + experts * 2 // 8
    assert active - router == sum(p.numel() for p in d.parameters())


def test_moe_exports_through_the_one_path_with_parity(moe_version, tmp_path):
    import onnxruntime as ort

    from ml.export import to_onnx

    src = to_onnx.ModelSource(name="lm", kind="causal_lm", model_dir=moe_version / "model",
                        tokenizer_dir=moe_version / "tokenizer")
    model = to_onnx.load_model(src)
    assert model.config._experts_implementation == moe.EXPORT_EXPERTS
    module = to_onnx.wrap(src, model)
    to_onnx.export_onnx(module, tmp_path / "m.onnx", kind="causal_lm", vocab_size=model.config.vocab_size)
    tok = to_onnx.load_tokenizer(src.tokenizer_dir)
    feeds = to_onnx.encode_samples(tok, ["The cat eats fish in the barn.", "The owl", "The dog eats bones in the"],
                             max_length=32)
    ref = to_onnx.torch_outputs(module, feeds["input_ids"], feeds["attention_mask"])
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, feeds)[0]
    assert np.abs(got - ref).max() < 1e-4 and (got.argmax(-1) == ref.argmax(-1)).all()
