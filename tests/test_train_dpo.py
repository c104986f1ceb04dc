"""dpo_adapter (ml/train/dpo.py): the sigmoid DPO loss and rewards, prompt masking, and on a toy
preference set, through the one loop, reward accuracy well above chance with a reference model whose
weights do not change; the saved version is a plain causal LM with merged weights."""

from __future__ import annotations

import json
import math
import random

import polars as pl
import pytest
import torch

from ml.train.config import DeviceSettings, DpoAdapterSettings
from ml.train.dpo import build_dpo_with_reference, dpo_terms, encode_pairs, pair_collate
from ml.train.tasks import IGNORE
from tests.helpers.training import ANIMALS, FOODS, PLACES, TINY, inputs, lm_version, train_one  # noqa: F401

DPO = {"model": {"beta": 0.5, "lora": {"r": 4, "alpha": 8}, "max_len": 64},
       "train": {**TINY["lora_adapter"]["train"], "max_steps": 30, "lr": 2e-2, "eval_every": 15, "save_every": 15}}


def test_sigmoid_loss_rewards_and_label_smoothing():
    policy = torch.tensor([-1.0, -3.0, -2.0, -2.0])  # chosen, chosen, rejected, rejected
    ref = torch.tensor([-2.0, -2.0, -2.0, -2.0])
    loss, rc, rr = dpo_terms(policy, ref, beta=0.5, eps=0.0)
    assert rc.tolist() == [0.5, -0.5] and rr.tolist() == [0.0, 0.0]
    assert loss.tolist() == pytest.approx([-math.log(1 / (1 + math.exp(-0.5))), -math.log(1 / (1 + math.exp(0.5)))])
    smooth, _, _ = dpo_terms(policy, ref, beta=0.5, eps=0.2)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert float(smooth[0]) == pytest.approx(-0.8 * math.log(sig(0.5)) - 0.2 * math.log(sig(-0.5)))
    same, _, _ = dpo_terms(ref, ref, beta=0.1, eps=0.0)
    assert same.tolist() == pytest.approx([math.log(2)] * 2)  # policy == reference: log 2


def test_pairs_mask_the_prompt_and_batch_chosen_then_rejected(inputs):
    from ml.tokenizer import load_tokenizer

    tok = load_tokenizer(inputs["tokenizer"])
    df = pl.DataFrame({"prompt": ["<|user|>What does the cat eat?<|end|><|assistant|>"] * 2,
                       "chosen": ["The cat eats fish.<|end|>", "x<|end|>"],
                       "rejected": ["The cat eats hay.<|end|>", "x<|end|>"]})
    items, dropped = encode_pairs(tok, df, 64)
    assert len(items) == 1 and dropped["same_after_cut"] == 1
    c_ids, c_lab, r_ids, r_lab = items[0]
    n_prompt = len(tok(df["prompt"][0], add_special_tokens=False)["input_ids"])
    assert c_lab[:n_prompt] == [IGNORE] * n_prompt and c_lab[n_prompt:] == c_ids[n_prompt:]
    batch = pair_collate(tok.pad_token_id)(items * 3)
    assert batch["input_ids"].shape[0] == 6 and batch["input_ids"][0, :len(c_ids)].tolist() == c_ids
    assert batch["input_ids"][3, :len(r_ids)].tolist() == r_ids


def _toy_preferences(root) -> str:
    """Chosen: the animal eats its food; rejected: it eats a place (learnable, not in the SFT data)."""
    from ml.datasets.sft import chat_prompt, chat_response

    rng = random.Random(0)
    d = root / "preference_dataset"
    d.mkdir()
    for split, n in (("train", 192), ("val", 48)):
        rows = []
        for k in range(n):
            i = rng.randrange(len(ANIMALS))
            a = ANIMALS[i]
            rows.append({"prompt": chat_prompt(f"What does the {a} eat?", system=""),
                         "chosen": chat_response(f"The {a} eats {FOODS[i]}."),
                         "rejected": chat_response(f"The {a} eats {PLACES[rng.randrange(len(PLACES))]}."),
                         "origin": "derived", "doc_id": f"{split}{k}", "source": "synthetic.jsonl",
                         "rejected_doc_id": f"{split}{k}"})
        pl.DataFrame(rows).write_parquet(d / f"{split}.parquet")
    return str(d)


@pytest.mark.slow
def test_dpo_on_a_toy_preference_set_beats_chance_and_keeps_the_reference(inputs, lm_version, tmp_path):
    from ml.train.device import resolve
    from ml.train.loop import train
    from ml.train.models import load_lm

    lora = tmp_path / "lora"
    train_one("lora_adapter", TINY["lora_adapter"], {**inputs, "lm_checkpoint": str(lm_version)}, lora)
    dpo_inputs = {"tokenizer": inputs["tokenizer"], "lm_checkpoint": str(lm_version), "lora_adapter": str(lora),
                  "preference_dataset": _toy_preferences(tmp_path)}
    settings = DpoAdapterSettings.model_validate(DPO)
    torch.manual_seed(0)
    built, ref = build_dpo_with_reference(settings, dpo_inputs)
    before = {k: v.clone() for k, v in ref.model.state_dict().items()}
    assert all(not p.requires_grad for p in ref.model.parameters())
    assert built.data["val_before"]["reward_accuracy"] == 0.0 and built.data["val_before"]["margin"] == 0.0
    result = train(built.task, settings.train, resolve(DeviceSettings(device="cpu", seed=0, threads=1)))
    val = result.summary["val"]
    assert val["reward_accuracy"] >= 0.9 and val["margin"] > 0.5 and val["loss"] < 0.4  # chance: 0.5, log 2
    assert val["chosen_reward"] > val["rejected_reward"]
    after = ref.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the reference did not move

    # through run_training: a plain causal LM with merged weights, metrics per eval
    out = tmp_path / "dpo"
    summary = train_one("dpo_adapter", DPO, dpo_inputs, out)
    assert {p.name for p in out.iterdir()} >= {"model", "tokenizer", "metrics.jsonl", "summary.json"}
    model, _ = load_lm(out)
    assert not any("lora" in n for n, _ in model.named_parameters())
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    for metric in ("loss", "reward_accuracy", "chosen_reward", "rejected_reward", "margin"):
        assert sorted(r["step"] for r in rows if r["split"] == "val" and r["metric"] == metric) == [15, 30]
    assert summary["val"]["reward_accuracy"] >= 0.9
