"""The models as loop Tasks (ml/train/loop.py), and what each one publishes.

``BUILDERS[asset](settings, inputs)`` returns a ``Built``: the Task, a ``save(out)`` that writes the model
part of the version (ml/FORMATS.md, "Checkpoints"), and data stats. Models and their val metrics:
DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from ml.train import models
from ml.train.config import (
    EmbeddingCheckpointSettings, GnnCheckpointSettings, LMCheckpointSettings, LoraAdapterSettings,
    NerCheckpointSettings, RelationCheckpointSettings,
)
from ml.train.loop import Batch, Task
from ml.train.task_parts import IGNORE, Built, InputError, check_lm_fits, pad_collate, read_label_list, read_split

# ---- lm -----------------------------------------------------------------------------------------
class Blocks:
    """Non-overlapping windows of seq_len + 1 tokens of one split (random access for the sampler)."""

    def __init__(self, shards, seq_len: int):
        self.shards, self.seq_len = shards, seq_len
        self.n = shards.num_blocks(seq_len)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return self.shards.block(i, self.seq_len)


def collate_blocks(items: list[np.ndarray]) -> Batch:
    arr = torch.from_numpy(np.stack(items))
    return {"input_ids": arr[:, :-1].contiguous(), "targets": arr[:, 1:].contiguous()}


def causal_loss(model, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy; targets already shifted (lm) or aligned by shifting here (sft)."""
    if "targets" in batch:
        logits = model(input_ids=batch["input_ids"]).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten())
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE)


def eval_causal(model, batches: Iterator[Batch]) -> dict[str, float]:
    total, n, correct = 0.0, 0, 0
    for b in batches:
        if "targets" in b:
            logits, tgt = model(input_ids=b["input_ids"]).logits, b["targets"]
        else:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
            tgt = b["labels"][:, 1:]
        mask = tgt != IGNORE
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten(), ignore_index=IGNORE,
                                       reduction="sum"))
        correct += int(((logits.argmax(-1) == tgt) & mask).sum())
        n += int(mask.sum())
    loss = total / max(n, 1) if n else float("nan")
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)) if math.isfinite(loss) else float("nan"),
            "token_accuracy": correct / max(n, 1)}


def build_lm(settings: LMCheckpointSettings, inputs: dict[str, str]) -> Built:
    from ml.tokenized_corpus import TokenShards
    from ml.tokenizer import load_tokenizer

    tok = load_tokenizer(inputs["tokenizer"])
    train, val = TokenShards(inputs["tokenized_corpus"], "train"), TokenShards(inputs["tokenized_corpus"], "val")
    if train.vocab_size > len(tok):
        raise InputError(f"tokenized_corpus has vocab_size {train.vocab_size} but the tokenizer has {len(tok)} ids: "
                         "they come from different tokenizer versions")
    seq = settings.model.seq_len
    tr, va = Blocks(train, seq), Blocks(val, seq)
    for name, b, s in (("train", tr, train), ("val", va, val)):
        if len(b) == 0:
            raise InputError(f"tokenized_corpus {name} split has {s.num_tokens} tokens: not one block of "
                             f"model.seq_len={seq} + 1")
    model = models.build_lm(settings.model, tok)
    loss, evaluate = causal_loss, eval_causal
    if settings.model.arch == "mixtral":  # sparse MoE: router aux + z losses, expert utilisation per eval
        from ml.train import moe

        m = settings.model.moe
        loss = moe.moe_loss(m.router_aux_loss_coef, m.router_z_loss_coef, m.num_experts, m.experts_per_token)
        evaluate = moe.eval_moe(m.num_experts, m.experts_per_token)
    task = Task("lm", model, tr, va, collate_blocks, loss, evaluate,
                count=lambda b: (b["input_ids"].shape[0], b["input_ids"].numel()), best_metric="loss", best_mode="min")

    def save(out: Path) -> None:
        model.save_pretrained(out / "model", safe_serialization=True)
        tok.save_pretrained(out / "tokenizer")

    return Built(task, save, {"train_blocks": len(tr), "val_blocks": len(va), "vocab_size": len(tok),
                              "train_tokens": train.num_tokens, "val_tokens": val.num_tokens})


# ---- sft ----------------------------------------------------------------------------------------
def encode_split_sft(tok, df: pl.DataFrame, max_len: int) -> tuple[list[tuple[list[int], list[int]]], dict[str, int]]:
    from ml.datasets.sft import encode_sft

    out, dropped = [], {"prompt_too_long": 0, "no_response_token": 0}
    for prompt, response in zip(df["prompt"], df["response"]):
        try:
            ids, labels = encode_sft(tok, prompt, response, max_len)
        except ValueError as exc:
            dropped["prompt_too_long" if "prompt" in str(exc) else "no_response_token"] += 1
            continue
        if all(l == IGNORE for l in labels[1:]):  # the shifted target would be empty
            dropped["no_response_token"] += 1
            continue
        out.append((ids, labels))
    return out, dropped


def build_sft(settings: LoraAdapterSettings, inputs: dict[str, str]) -> Built:
    from ml.tokenizer import load_tokenizer

    m = settings.model
    tok = load_tokenizer(inputs["tokenizer"])
    base, _ = models.load_lm(inputs["lm_checkpoint"])
    check_lm_fits(base, tok, m.max_len, "base LM (lm_checkpoint)")
    base.train()
    if m.mode == "lora":
        model = models.add_lora(base, m.lora, "CAUSAL_LM", "model.lora")
    else:
        model = base
    data, dropped = {}, {}
    for split in ("train", "val"):
        df = read_split(Path(inputs["sft_dataset"]), split, ["prompt", "response"])
        data[split], d = encode_split_sft(tok, df, m.max_len)
        dropped.update({f"{split}.dropped.{k}": v for k, v in d.items()})
        if not data[split]:
            raise InputError(f"sft_dataset {split} split has no usable example ({df.height} rows, dropped {d})")
    task = Task("sft", model, data["train"], data["val"], pad_collate(tok.pad_token_id), causal_loss, eval_causal,
                count=lambda b: (b["input_ids"].shape[0], int(b["attention_mask"].sum())),
                best_metric="loss", best_mode="min")

    def save(out: Path) -> None:
        if m.mode == "lora":  # not the base's store path: content must not depend on where the store lives
            for peft_cfg in model.peft_config.values():  # (the base version is the manifest's upstream lm_checkpoint)
                peft_cfg.base_model_name_or_path = "lm_checkpoint"
            model.get_base_model().config.name_or_path = "lm_checkpoint"  # peft's README.md names it as base_model
        if m.mode == "lora":  # no embedding layer is trained: peft's "auto" would ask the Hub about "lm_checkpoint"
            model.save_pretrained(out / "adapter", safe_serialization=True, save_embedding_layers=False)
        else:
            model.save_pretrained(out / "model", safe_serialization=True)
        card = out / "adapter" / "README.md"
        if card.is_file():  # peft also tags the card with the path the base was loaded from
            card.write_text(re.sub(r"(?m)^- base_model:adapter:.*$", "- base_model:adapter:lm_checkpoint",
                                   card.read_text("utf-8")), "utf-8")
        tok.save_pretrained(out / "tokenizer")

    return Built(task, save, {"train_examples": len(data["train"]), "val_examples": len(data["val"]), **dropped})


# ---- embedding ----------------------------------------------------------------------------------
def text_collate(tok, max_len: int, fields: tuple[str, ...]) -> Callable[[list[dict]], Batch]:
    """Tokenize the given fields of every item into ONE padded batch (field after field), so a
    bi-encoder needs a single forward pass (one DDP forward per backward)."""
    def collate(items):
        texts = [it[f] for f in fields for it in items]
        enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt",
                  return_token_type_ids=False)
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if "label" in items[0]:
            batch["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
        return batch
    return collate


def _embed(model, batch: Batch) -> torch.Tensor:
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return models.mean_pool(hidden, batch["attention_mask"])


def contrastive_loss(temperature: float) -> Callable[[Any, Batch], torch.Tensor]:
    def loss(model, batch):
        emb = _embed(model, batch)
        a, p = emb.chunk(2)
        sim = a @ p.T / temperature
        target = torch.arange(a.shape[0], device=sim.device)
        return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))
    return loss


def eval_embedding(temperature: float) -> Callable[[Any, Iterator[Batch]], dict[str, float]]:
    def evaluate(model, batches):
        anchors, positives = [], []
        for b in batches:
            a, p = _embed(model, b).chunk(2)
            anchors.append(a.float())
            positives.append(p.float())
        a, p = torch.cat(anchors), torch.cat(positives)
        sim = a @ p.T
        target = torch.arange(a.shape[0], device=sim.device)
        return {"recall_at_1": float((sim.argmax(1) == target).float().mean()),
                "mean_pos_cosine": float(sim.diagonal().mean()),
                "loss": float(F.cross_entropy(sim / temperature, target)), "pairs": float(a.shape[0])}
    return evaluate


def build_embedding(settings: EmbeddingCheckpointSettings, inputs: dict[str, str]) -> Built:
    from ml.tokenizer import load_tokenizer

    m = settings.model
    ours = load_tokenizer(inputs["tokenizer"]) if m.base == "scratch" else None
    model, tok = models.build_embedding(m, ours)
    split = {s: read_split(Path(inputs["embedding_dataset"]), s, ["anchor", "positive"]).to_dicts()
             for s in ("train", "val")}
    if len(split["val"]) < 2:
        raise InputError(f"embedding_dataset val split has {len(split['val'])} pairs: recall@1 needs at least 2")
    task = Task("embedding", model, split["train"], split["val"], text_collate(tok, m.max_len, ("anchor", "positive")),
                contrastive_loss(m.temperature), eval_embedding(m.temperature),
                count=lambda b: (b["input_ids"].shape[0] // 2, int(b["attention_mask"].sum())),
                best_metric="recall_at_1", best_mode="max")

    def save(out: Path) -> None:
        final = model.merge_and_unload() if m.base == "minilm" else model
        final.save_pretrained(out / "model", safe_serialization=True)
        tok.save_pretrained(out / "tokenizer")
        (out / "pooling.json").write_text(json.dumps(models.POOLING, indent=2) + "\n")

    return Built(task, save, {"train_pairs": len(split["train"]), "val_pairs": len(split["val"]), "base": m.base})


# ---- relation -----------------------------------------------------------------------------------
def classify_loss(model, batch: Batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits.float(), batch["labels"])


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the gold labels or the predictions."""
    scores = []
    for c in np.union1d(pred, gold):
        tp = int(((pred == c) & (gold == c)).sum())
        fp, fn = int(((pred == c) & (gold != c)).sum()), int(((pred != c) & (gold == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def eval_classifier(model, batches: Iterator[Batch]) -> dict[str, float]:
    preds, golds, total = [], [], 0.0
    for b in batches:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        total += float(F.cross_entropy(logits, b["labels"], reduction="sum"))
        preds.append(logits.argmax(-1).cpu())
        golds.append(b["labels"].cpu())
    p, g = torch.cat(preds).numpy(), torch.cat(golds).numpy()
    return {"accuracy": float((p == g).mean()), "macro_f1": macro_f1(p, g), "loss": total / len(g)}


def build_relation(settings: RelationCheckpointSettings, inputs: dict[str, str]) -> Built:
    from ml.tokenizer import load_tokenizer

    m = settings.model
    ddir = Path(inputs["relation_dataset"])
    labels = read_label_list(ddir, "label")
    if isinstance(labels, dict):
        labels = labels.get("labels", labels)
    if not isinstance(labels, list) or len(labels) < 2 or len(set(labels)) != len(labels):
        raise InputError(f"{ddir}/labels.json must be a list of at least 2 distinct labels, got {labels!r}")
    label_id = {l: i for i, l in enumerate(labels)}
    split = {}
    for s in ("train", "val"):
        df = read_split(ddir, s, ["text", "label"])
        unknown = sorted(set(df["label"].to_list()) - set(label_id))
        if unknown:
            raise InputError(f"relation_dataset {s} split has labels not in labels.json: {unknown[:5]}")
        split[s] = [{"text": t, "label": label_id[l]} for t, l in zip(df["text"], df["label"])]
    ours = load_tokenizer(inputs["tokenizer"]) if m.base == "scratch" else None
    model, tok = models.build_relation(m, labels, ours)
    task = Task("relation", model, split["train"], split["val"], text_collate(tok, m.max_len, ("text",)),
                classify_loss, eval_classifier,
                count=lambda b: (b["input_ids"].shape[0], int(b["attention_mask"].sum())),
                best_metric="macro_f1", best_mode="max")

    def save(out: Path) -> None:
        model.save_pretrained(out / "model", safe_serialization=True)
        tok.save_pretrained(out / "tokenizer")

    counts = pl.Series([labels[x["label"]] for x in split["train"]]).value_counts()
    return Built(task, save, {"train_examples": len(split["train"]), "val_examples": len(split["val"]),
                              "labels": len(labels),
                              "train_label_counts": dict(zip(counts[:, 0].to_list(), counts[:, 1].to_list()))})


# ---- gnn ----------------------------------------------------------------------------------------
def gnn_loss(model, batch: Batch) -> torch.Tensor:
    from ml.gnn.data import inputs

    scores = model(*inputs(batch))
    return F.cross_entropy(scores.float(), torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))


def eval_gnn(model, batches: Iterator[Batch]) -> dict[str, float]:
    """MRR, NDCG@10, hit@1 of the ranker and of the no-graph baseline (query-chunk cosine of the
    embedding model) on the same validation queries and candidates."""
    from ml.gnn.data import baseline_scores, inputs, ranking_metrics, ranks

    r, rb, total = [], [], 0.0
    for b in batches:
        scores = model(*inputs(b)).float()
        total += float(F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device),
                                       reduction="sum"))
        r.append(ranks(scores).cpu())
        rb.append(ranks(baseline_scores(b).float()).cpu())
    r, rb = torch.cat(r), torch.cat(rb)
    ours, base = ranking_metrics(r), ranking_metrics(rb)
    return {**ours, **{f"baseline_{k}": v for k, v in base.items()}, "mrr_gain": ours["mrr"] - base["mrr"],
            "loss": total / len(r), "queries": float(len(r))}


def build_gnn(settings: GnnCheckpointSettings, inputs: dict[str, str]) -> Built:
    from ml.gnn import model as gnn_model
    from ml.gnn.data import EDGE_DIM, GraphData, collate

    m = settings.model
    emb, etok = models.load_embedding(inputs["embedding_checkpoint"])
    data = GraphData(Path(inputs["gnn_dataset"]),
                     lambda texts: models.encode(emb, etok, texts, max_len=m.feature_max_len))
    for split in ("train", "val"):
        if not data.items[split]:
            raise InputError(f"gnn_dataset {split} split has no example")
    model = gnn_model.build({"feature_dim": int(data.x.shape[1]), "edge_dim": EDGE_DIM, "hidden_size": m.hidden_size,
                             "num_layers": m.num_layers, "dropout": m.dropout})
    task = Task("gnn", model, data.items["train"], data.items["val"], collate(data.x, data.q), gnn_loss, eval_gnn,
                count=lambda b: (b["candidates"].shape[0], b["x"].shape[0]), best_metric="mrr", best_mode="max")
    candidates = int(data.items["train"][0]["candidates"].shape[0])

    def save(out: Path) -> None:
        gnn_model.save(model.cpu(), out / "model", {
            "inputs": list(gnn_model.INPUT_NAMES), "output": gnn_model.OUTPUT_NAME, "candidates": candidates,
            "features": {"from": "embedding_checkpoint", "max_len": m.feature_max_len,
                         "pooling": models.POOLING}})
        etok.save_pretrained(out / "tokenizer")  # the embedding model's: it encodes node and query texts

    return Built(task, save, {"train_queries": len(data.items["train"]), "val_queries": len(data.items["val"]),
                              "candidates_per_query": candidates, "embedded_nodes": int(data.x.shape[0]),
                              "feature_dim": int(data.x.shape[1])})


# ---- ner ----------------------------------------------------------------------------------------
def token_collate(pad_id: int, max_len: int) -> Callable[[list[tuple[list[int], list[int]]]], Batch]:
    def collate(items):
        n = max(min(len(ids), max_len) for ids, _ in items)
        ids = torch.full((len(items), n), pad_id, dtype=torch.long)
        labels = torch.full((len(items), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), n), dtype=torch.long)
        for i, (x, y) in enumerate(items):
            k = min(len(x), max_len)
            ids[i, :k], labels[i, :k], mask[i, :k] = torch.tensor(x[:k]), torch.tensor(y[:k]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
    return collate


def token_loss(model, batch: Batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE)


def entity_prf(gold: list[list[str]], pred: list[list[str]], types: list[str]) -> dict[str, float]:
    """Entity-level precision/recall/F1 (exact token span and type) per type and micro-averaged.
    A type with no gold and no predicted entity reports only its support (0)."""
    from ml.datasets.ner import decode_entities

    tp, fp, fn = ({t: 0 for t in types} for _ in range(3))
    for g, p in zip(gold, pred):
        ge, pe = decode_entities(g), decode_entities(p)
        for e in pe:
            (tp if e in ge else fp)[e[2]] += 1
        for e in ge - pe:
            fn[e[2]] += 1

    def prf(a, b, c):
        p = a / (a + b) if a + b else 0.0
        r = a / (a + c) if a + c else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    out: dict[str, float] = {}
    for t in types:
        out[f"support.{t}"] = float(tp[t] + fn[t])
        if tp[t] + fp[t] + fn[t]:
            out[f"precision.{t}"], out[f"recall.{t}"], out[f"f1.{t}"] = prf(tp[t], fp[t], fn[t])
    out["precision"], out["recall"], out["f1"] = prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    return out


def eval_ner(tags: list[str]) -> Callable[[Any, Iterator[Batch]], dict[str, float]]:
    types = [t[2:] for t in tags if t.startswith("B-")]

    def evaluate(model, batches):
        gold, pred, total, n, correct = [], [], 0.0, 0, 0
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
            lab = b["labels"]
            total += float(F.cross_entropy(logits.flatten(0, 1), lab.flatten(), ignore_index=IGNORE, reduction="sum"))
            arg = logits.argmax(-1)
            mask = lab != IGNORE
            n += int(mask.sum())
            correct += int(((arg == lab) & mask).sum())
            for a, l, m in zip(arg.cpu().tolist(), lab.cpu().tolist(), mask.cpu().tolist()):
                gold.append([tags[y] for y, k in zip(l, m) if k])
                pred.append([tags[y] for y, k in zip(a, m) if k])
        return {**entity_prf(gold, pred, types), "token_accuracy": correct / max(n, 1), "loss": total / max(n, 1)}
    return evaluate


def build_ner(settings: NerCheckpointSettings, inputs: dict[str, str]) -> Built:
    from ml.tokenizer import load_tokenizer

    m = settings.model
    ddir = Path(inputs["ner_dataset"])
    tags = read_label_list(ddir, "tag")
    if not isinstance(tags, list) or not tags or tags[0] != "O" or len(set(tags)) != len(tags):
        raise InputError(f"{ddir}/labels.json must list distinct BIO tags starting with 'O', got {tags!r}")
    tag_id = {t: i for i, t in enumerate(tags)}
    tok = load_tokenizer(inputs["tokenizer"])
    split = {}
    for s in ("train", "val"):
        df = read_split(ddir, s, ["input_ids", "tags"])
        unknown = sorted({t for row in df["tags"].to_list() for t in row} - set(tag_id))
        if unknown:
            raise InputError(f"ner_dataset {s} split has tags not in labels.json: {unknown[:5]}")
        too_big = [i for row in df["input_ids"].to_list() for i in row if i >= len(tok)]
        if too_big:
            raise InputError(f"ner_dataset {s} split has token id {max(too_big)} >= the tokenizer's {len(tok)} ids: "
                             "they come from different tokenizer versions")
        split[s] = [(list(ids), [tag_id[t] for t in ts]) for ids, ts in zip(df["input_ids"], df["tags"]) if len(ids)]
        if not split[s]:
            raise InputError(f"ner_dataset {s} split has no example")
    model = models.build_ner(m, tags, tok)
    task = Task("ner", model, split["train"], split["val"], token_collate(tok.pad_token_id, m.max_len), token_loss,
                eval_ner(tags), count=lambda b: (b["input_ids"].shape[0], int(b["attention_mask"].sum())),
                best_metric="f1", best_mode="max")

    def save(out: Path) -> None:
        model.save_pretrained(out / "model", safe_serialization=True)
        tok.save_pretrained(out / "tokenizer")

    return Built(task, save, {"train_sentences": len(split["train"]), "val_sentences": len(split["val"]),
                              "tags": len(tags)})


BUILDERS = {"lm_checkpoint": build_lm, "lora_adapter": build_sft, "embedding_checkpoint": build_embedding,
            "relation_checkpoint": build_relation, "gnn_checkpoint": build_gnn, "ner_checkpoint": build_ner}


def _build_dpo(settings, inputs: dict[str, str]) -> Built:
    from ml.train.dpo import build_dpo

    return build_dpo(settings, inputs)


BUILDERS["dpo_adapter"] = _build_dpo  # ml/train/dpo.py

