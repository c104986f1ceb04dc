"""DPO (Direct Preference Optimization) of the SFT model: the ``dpo_adapter`` Task of the one loop.

Policy and frozen reference both start as the SFT model (lora_adapter merged into its lm_checkpoint), so
``reward_accuracy`` is 0 before training. The loss, rewards and metrics: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Iterator

import polars as pl
import torch
import torch.nn.functional as F

from ml.train import models
from ml.train.loop import Batch, Task
from ml.train.task_parts import IGNORE, Built, InputError, check_lm_fits, pad_collate, read_split

Item = tuple[list[int], list[int], list[int], list[int]]  # chosen ids, labels, rejected ids, labels


def encode_pairs(tok, df: pl.DataFrame, max_len: int) -> tuple[list[Item], dict[str, int]]:
    """Each (prompt, chosen, rejected) as two ``encode_sft`` sequences (prompt tokens -100)."""
    from ml.datasets.sft import encode_sft

    out: list[Item] = []
    dropped = {"prompt_too_long": 0, "no_response_token": 0, "same_after_cut": 0}
    for prompt, chosen, rejected in zip(df["prompt"], df["chosen"], df["rejected"]):
        try:
            c_ids, c_lab = encode_sft(tok, prompt, chosen, max_len)
            r_ids, r_lab = encode_sft(tok, prompt, rejected, max_len)
        except ValueError as exc:
            dropped["prompt_too_long" if "prompt" in str(exc) else "no_response_token"] += 1
            continue
        if all(l == IGNORE for l in c_lab[1:]) or all(l == IGNORE for l in r_lab[1:]):
            dropped["no_response_token"] += 1
            continue
        if c_ids == r_ids:  # both cut to the same tokens: no preference left to learn
            dropped["same_after_cut"] += 1
            continue
        out.append((c_ids, c_lab, r_ids, r_lab))
    return out, dropped


def pair_collate(pad_id: int) -> Callable[[list[Item]], Batch]:
    """One padded batch of 2B rows: the B chosen sequences, then the B rejected ones."""
    pad = pad_collate(pad_id)

    def collate(items: list[Item]) -> Batch:
        return pad([(c, cl) for c, cl, _, _ in items] + [(r, rl) for _, _, r, rl in items])
    return collate


def sequence_logps(model, batch: Batch) -> torch.Tensor:
    """[2B] summed log-probabilities of the response tokens (labels != -100) of every row."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="none")
    return -nll.view(labels.shape).sum(-1)


class Reference:
    """The frozen reference model (a copy of the SFT model): no gradients, eval mode, never optimised."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def logps(self, batch: Batch) -> torch.Tensor:
        device = batch["input_ids"].device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        return sequence_logps(self.model, batch)


def dpo_terms(policy: torch.Tensor, reference: torch.Tensor, beta: float, eps: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair loss, chosen rewards, rejected rewards) from [2B] policy and reference log-probs."""
    pc, pr = policy.float().chunk(2)
    rc, rr = reference.float().chunk(2)
    h = (pc - pr) - (rc - rr)
    loss = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    return loss, beta * (pc - rc).detach(), beta * (pr - rr).detach()


def dpo_loss(ref: Reference, beta: float, eps: float) -> Callable[[Any, Batch], torch.Tensor]:
    def loss(model, batch):
        return dpo_terms(sequence_logps(model, batch), ref.logps(batch), beta, eps)[0].mean()
    return loss


def eval_dpo(ref: Reference, beta: float, eps: float) -> Callable[[Any, Iterator[Batch]], dict[str, float]]:
    def evaluate(model, batches):
        loss = acc = logp_acc = chosen = rejected = 0.0
        n = 0
        for b in batches:
            pol = sequence_logps(model, b)
            l, rc, rr = dpo_terms(pol, ref.logps(b), beta, eps)
            pc, pr = pol.float().chunk(2)
            loss += float(l.sum())
            acc += float((rc > rr).float().sum())
            logp_acc += float((pc > pr).float().sum())
            chosen += float(rc.sum())
            rejected += float(rr.sum())
            n += l.shape[0]
        n = max(n, 1)
        return {"loss": loss / n, "reward_accuracy": acc / n, "chosen_reward": chosen / n,
                "rejected_reward": rejected / n, "margin": (chosen - rejected) / n, "logp_accuracy": logp_acc / n,
                "pairs": float(n)}
    return evaluate


def evaluate_before(task: Task, batch_size: int, eval_batches: int) -> dict[str, float]:
    """The Task's validation metrics on the pairs the loop evaluates, before any step (CPU)."""
    n = min(len(task.val_set), batch_size * eval_batches)
    batches = (task.collate([task.val_set[i] for i in range(lo, min(n, lo + batch_size))])
               for lo in range(0, n, batch_size))
    was = task.model.training
    task.model.eval()
    try:
        with torch.no_grad():
            return task.evaluate(task.model, batches)
    finally:
        task.model.train(was)


def build_dpo(settings, inputs: dict[str, str]) -> Built:
    """The DPO Task: inputs lora_adapter, lm_checkpoint (its base), preference_dataset, tokenizer."""
    return build_dpo_with_reference(settings, inputs)[0]


def build_dpo_with_reference(settings, inputs: dict[str, str]) -> tuple[Built, Reference]:
    """``build_dpo`` and the frozen reference it compares against."""
    from ml.tokenizer import load_tokenizer

    m = settings.model
    tok = load_tokenizer(inputs["tokenizer"])
    sft, _ = models.load_lora_merged(inputs["lora_adapter"], inputs["lm_checkpoint"])
    check_lm_fits(sft, tok, m.max_len, "SFT model")
    ref = Reference(copy.deepcopy(sft))
    sft.train()
    if m.mode == "lora":
        policy = models.add_lora(sft, m.lora, "CAUSAL_LM", "model.lora")
    else:
        policy = sft.requires_grad_(True)  # the merge left the base frozen
    data, dropped = {}, {}
    for split in ("train", "val"):
        df = read_split(Path(inputs["preference_dataset"]), split, ["prompt", "chosen", "rejected"])
        data[split], d = encode_pairs(tok, df, m.max_len)
        dropped.update({f"{split}.dropped.{k}": v for k, v in d.items()})
        if not data[split]:
            raise InputError(f"preference_dataset {split} split has no usable pair ({df.height} rows, dropped {d})")
    task = Task("dpo", policy, data["train"], data["val"], pair_collate(tok.pad_token_id),
                dpo_loss(ref, m.beta, m.label_smoothing), eval_dpo(ref, m.beta, m.label_smoothing),
                count=lambda b: (b["input_ids"].shape[0] // 2, int(b["attention_mask"].sum())),
                best_metric="loss", best_mode="min")
    before = evaluate_before(task, settings.train.batch_size, settings.train.eval_batches) if m.eval_before else {}

    def save(out: Path) -> None:
        final = policy.merge_and_unload() if m.mode == "lora" else policy
        final.save_pretrained(out / "model", safe_serialization=True)
        tok.save_pretrained(out / "tokenizer")

    return Built(task, save, {"train_pairs": len(data["train"]), "val_pairs": len(data["val"]),
                              "reference": "frozen copy of the merged SFT model", "val_before": before,
                              **dropped}), ref
