"""Held-out evaluation: every model version on the ``test`` split of its dataset (no Dagster).

``evaluate_model(asset, model_dir, inputs, settings)``; every metric carries ``n``, and an empty test
split is an error naming the dataset, never a silent zero. Models, test data and metrics: DESIGN.md,
"Module notes".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from ml.evaluation import metrics

END = "<|end|>"
LM_PROMPTS = ("The ", "A function that", "Return the", "import ", "In Python,")
# the upstream that holds the test split each model is measured on
TEST_DATA = {"lm_checkpoint": "tokenized_corpus", "lora_adapter": "sft_dataset", "dpo_adapter": "preference_dataset",
             "embedding_checkpoint": "embedding_dataset", "relation_checkpoint": "relation_dataset",
             "gnn_checkpoint": "gnn_dataset", "ner_checkpoint": "ner_dataset"}
HIGHER_IS_BETTER = {"loss": False, "perplexity": False}  # every other metric: higher is better


class EvaluationError(ValueError):
    """A model version that cannot be evaluated (e.g. its dataset has no test split)."""


@dataclass
class EvalOutput:
    asset: str
    dataset: str  # the upstream asset whose test split was read
    metrics: list[dict[str, Any]] = field(default_factory=list)  # {metric, value, n}
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)

    def add(self, values: dict[str, float], n: int) -> None:
        self.metrics += [{"metric": k, "value": float(v), "n": int(n)} for k, v in values.items()]


def higher_is_better(metric: str) -> bool:
    return HIGHER_IS_BETTER.get(metric.rsplit(".", 1)[-1], True)


def _test_frame(dataset_dir: Path, name: str, columns: list[str], limit: int) -> pl.DataFrame:
    f = Path(dataset_dir) / "test.parquet"
    if not f.is_file():
        raise EvaluationError(f"{name} version {dataset_dir.name} has no test.parquet (made before test splits, or "
                              "by an older builder): rebuild it with test_ratio > 0")
    df = pl.read_parquet(f, columns=columns)
    if df.height == 0:
        raise EvaluationError(f"{name} version {dataset_dir.name} has an empty test split (test_ratio 0?)")
    return df.head(limit)


def _answer(text: str) -> str:
    return text.replace(END, "").split("Evidence:", 1)[0].strip()


def _greedy(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches, stop at <|end|> or eos), decoded without
    special tokens."""
    import torch

    stop = [i for i in (tok.convert_tokens_to_ids(END), tok.eos_token_id) if i is not None and i >= 0]
    out: list[str] = []
    tok.padding_side = "left"
    for lo in range(0, len(prompts), batch_size):
        batch = tok(prompts[lo:lo + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                 pad_token_id=tok.pad_token_id)
        for row in gen[:, batch["input_ids"].shape[1]:]:
            ids = row.tolist()
            cut = next((i for i, t in enumerate(ids) if t in stop), len(ids))
            out.append(tok.decode(ids[:cut], skip_special_tokens=True))
    return out


def _lm(model_dir: Path, inputs: dict[str, Path], settings: dict, limit: int) -> EvalOutput:
    import numpy as np
    import torch

    from ml.tokenized_corpus import TokenShards
    from ml.train.models import load_lm
    from ml.train.tasks import Blocks, collate_blocks, eval_causal

    model, tok = load_lm(model_dir)
    seq = int(((settings.get("model") or {}).get("seq_len")) or model.config.max_position_embeddings)
    try:
        shards = TokenShards(inputs["tokenized_corpus"], "test")
    except Exception as exc:  # an index without a test split
        raise EvaluationError(f"tokenized_corpus {Path(inputs['tokenized_corpus']).name}: {exc}") from exc
    blocks = Blocks(shards, seq)
    if len(blocks) == 0:
        raise EvaluationError(f"tokenized_corpus test split has {shards.num_tokens} tokens: not one block of {seq} + 1")
    idx = np.arange(min(len(blocks), limit))
    batches = (collate_blocks([blocks[i] for i in idx[lo:lo + 16]]) for lo in range(0, len(idx), 16))
    with torch.no_grad():
        values = eval_causal(model, batches)
    out = EvalOutput("lm_checkpoint", "tokenized_corpus")
    out.add(values, n=int(len(idx) * seq))
    gens = _greedy(model, tok, list(LM_PROMPTS), max_new_tokens=24)
    out.tables["generations"] = pl.DataFrame({"prompt": list(LM_PROMPTS), "generation": gens})
    return out


def _answers(asset: str, model, tok, df: pl.DataFrame, gold_col: str, dataset: str, max_new_tokens: int) -> EvalOutput:
    prompts = df["prompt"].to_list()
    golds = [_answer(t) for t in df[gold_col].to_list()]
    preds = [_answer(t) for t in _greedy(model, tok, prompts, max_new_tokens)]
    em = [metrics.exact_match(p, g) for p, g in zip(preds, golds)]
    f1 = [metrics.token_f1(p, g) for p, g in zip(preds, golds)]
    out = EvalOutput(asset, dataset)
    out.add({"exact_match": sum(em) / len(em), "token_f1": sum(f1) / len(f1)}, n=len(em))
    out.tables["generations"] = pl.DataFrame({
        "question": [p.rsplit("<|user|>", 1)[-1].replace("<|end|><|assistant|>", "") for p in prompts],
        "expected": golds, "generated": preds, "exact_match": em, "token_f1": [round(x, 3) for x in f1]})
    return out


def _sft(model_dir: Path, inputs: dict[str, Path], settings: dict, limit: int) -> EvalOutput:
    from ml.train.models import load_lora_merged

    model, tok = load_lora_merged(model_dir, inputs["lm_checkpoint"])
    df = _test_frame(inputs["sft_dataset"], "sft_dataset", ["prompt", "response"], limit)
    return _answers("lora_adapter", model, tok, df, "response", "sft_dataset", max_new_tokens=32)


def _dpo(model_dir: Path, inputs: dict[str, Path], settings: dict, limit: int) -> EvalOutput:
    from ml.train.models import load_lm

    model, tok = load_lm(model_dir)
    df = _test_frame(inputs["preference_dataset"], "preference_dataset", ["prompt", "chosen"], limit)
    return _answers("dpo_adapter", model, tok, df, "chosen", "preference_dataset", max_new_tokens=32)


def _embedding(model_dir: Path, inputs: dict[str, Path], settings: dict, limit: int) -> EvalOutput:
    from ml.train.models import encode, load_embedding

    model, tok = load_embedding(model_dir)
    df = _test_frame(inputs["embedding_dataset"], "embedding_dataset", ["anchor", "positive"], limit)
    max_len = int(((settings.get("model") or {}).get("max_len")) or 128)
    a = encode(model, tok, df["anchor"].to_list(), max_len=max_len)
    p = encode(model, tok, df["positive"].to_list(), max_len=max_len)
    out = EvalOutput("embedding_checkpoint", "embedding_dataset")
    out.add(metrics.retrieval_metrics((a @ p.T).float().numpy()), n=df.height)
    return out


def _label_index(model) -> tuple[list[str], dict[str, int]]:
    """A classifier's labels in id order and their ids (from ``config.id2label``)."""
    labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    return labels, {lab: i for i, lab in enumerate(labels)}


def _relation(model_dir: Path, inputs: dict[str, Path], settings: dict, limit: int) -> EvalOutput:
    import torch

    from ml.train.models import load_relation

    model, tok = load_relation(model_dir)
    labels, label_id = _label_index(model)
    df = _test_frame(inputs["relation_dataset"], "relation_dataset", ["text", "label"], limit)
    unknown = sorted(set(df["label"]) - set(label_id))
    if unknown:
        raise EvaluationError(f"relation_dataset test labels {unknown[:5]} are not the model's labels")
    max_len = int(((settings.get("model") or {}).get("max_len")) or 128)
    preds = []
    for lo in range(0, df.height, 64):
        enc = tok(df["text"][lo:lo + 64].to_list(), truncation=True, max_length=max_len, padding=True,
                  return_tensors="pt")
        with torch.no_grad():
            preds += model(**enc).logits.argmax(-1).tolist()
    gold = [label_id[x] for x in df["label"]]
    m = metrics.confusion_matrix(gold, preds, len(labels))
    out = EvalOutput("relation_checkpoint", "relation_dataset")
    out.add(metrics.classification_metrics(m), n=df.height)
    present = [i for i in range(len(labels)) if m[i].sum() or m[:, i].sum()]
    out.tables["confusion_matrix"] = pl.DataFrame(
        {"gold": [labels[i] for i in present], **{labels[j]: [int(m[i, j]) for i in present] for j in present}})
    out.images["confusion_matrix"] = metrics.confusion_png(m, labels, f"relation_checkpoint: test ({df.height} examples)")
    return out


def _gnn(model_dir: Path, inputs: dict[str, Path], settings: dict, limit: int) -> EvalOutput:
    import torch

    from ml.gnn.data import GraphData, collate
    from ml.gnn.model import load_gnn
    from ml.train.models import encode, load_embedding
    from ml.train.tasks import eval_gnn

    model, conf = load_gnn(model_dir)
    emb, etok = load_embedding(inputs["embedding_checkpoint"])
    _test_frame(inputs["gnn_dataset"], "gnn_dataset", ["query"], 1)
    max_len = int(conf.get("features", {}).get("max_len") or 64)
    data = GraphData(Path(inputs["gnn_dataset"]), lambda texts: encode(emb, etok, texts, max_len=max_len),
                     splits=("test",))
    items = data.items["test"][:limit]
    fn = collate(data.x, data.q)
    with torch.no_grad():
        values = eval_gnn(model, (fn(items[lo:lo + 32]) for lo in range(0, len(items), 32)))
    out = EvalOutput("gnn_checkpoint", "gnn_dataset")
    out.add({k: v for k, v in values.items() if k not in ("queries", "loss")}, n=len(items))
    return out


def _ner(model_dir: Path, inputs: dict[str, Path], settings: dict, limit: int) -> EvalOutput:
    import torch

    from ml.train.models import load_ner
    from ml.train.tasks import eval_ner, token_collate

    model, tok = load_ner(model_dir)
    tags, tag_id = _label_index(model)
    df = _test_frame(inputs["ner_dataset"], "ner_dataset", ["input_ids", "tags"], limit)
    items = [(list(ids), [tag_id[t] for t in ts]) for ids, ts in zip(df["input_ids"], df["tags"]) if len(ids)]
    max_len = int(((settings.get("model") or {}).get("max_len")) or 128)
    fn = token_collate(tok.pad_token_id, max_len)
    with torch.no_grad():
        values = eval_ner(tags)(model, (fn(items[lo:lo + 32]) for lo in range(0, len(items), 32)))
    out = EvalOutput("ner_checkpoint", "ner_dataset")
    out.add({k: v for k, v in values.items() if k != "loss"}, n=len(items))
    return out


EVALUATORS: dict[str, Callable[[Path, dict[str, Path], dict, int], EvalOutput]] = {
    "lm_checkpoint": _lm, "lora_adapter": _sft, "dpo_adapter": _dpo, "embedding_checkpoint": _embedding,
    "relation_checkpoint": _relation, "gnn_checkpoint": _gnn, "ner_checkpoint": _ner}


def evaluate_model(asset: str, model_dir: Path | str, inputs: dict[str, Path | str], settings: dict | None = None,
                   max_examples: int = 256) -> EvalOutput:
    """Measure one stored model version on its test split (``inputs``: upstream name -> version directory,
    as the model's manifest names them; ``settings``: the model version's config)."""
    if asset not in EVALUATORS:
        raise EvaluationError(f"no evaluator for {asset!r}; known: {sorted(EVALUATORS)}")
    import torch

    torch.manual_seed(0)
    return EVALUATORS[asset](Path(model_dir), {k: Path(v) for k, v in inputs.items()}, settings or {}, max_examples)


def write_output(out_dir: Path, results: list[EvalOutput], versions: dict[str, str] | None = None) -> pl.DataFrame:
    """``results.parquet`` (asset, dataset, metric, value, n), one ``<asset>.<table>.parquet`` per table and
    one ``<asset>.<image>.png`` per image into ``out_dir``; returns the results frame. ``index.json`` names
    the model version measured (``versions``: asset -> version), so the same figures of another model
    version are another evaluation version."""
    out_dir = Path(out_dir)
    rows = [{"asset": r.asset, "dataset": r.dataset, **m} for r in results for m in r.metrics]
    frame = pl.DataFrame(rows, schema={"asset": pl.String, "dataset": pl.String, "metric": pl.String,
                                       "value": pl.Float64, "n": pl.Int64})
    frame.write_parquet(out_dir / "results.parquet")
    for r in results:
        for name, table in r.tables.items():
            table.write_parquet(out_dir / f"{r.asset}.{name}.parquet")
        for name, png in r.images.items():
            (out_dir / f"{r.asset}.{name}.png").write_bytes(png)
    (out_dir / "index.json").write_text(json.dumps(
        {r.asset: {"dataset": r.dataset, "tables": sorted(r.tables), "images": sorted(r.images),
                   "model_version": (versions or {}).get(r.asset)} for r in results},
        indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return frame


def read_results(version_dir: Path | str) -> pl.DataFrame:
    """The ``results.parquet`` of a model_evaluation version (asset, dataset, metric, value, n)."""
    return pl.read_parquet(Path(version_dir) / "results.parquet")
