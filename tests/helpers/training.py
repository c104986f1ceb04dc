"""Tiny training inputs for the training tests: ``make_inputs`` builds the upstream versions
(tokenizer, tokenized_corpus, the datasets) with the real ml/ writers from a small templated corpus;
``TINY`` holds debug-sized model settings, ``train_one`` trains one asset in this process, and the
``inputs`` / ``lm_version`` fixtures share one set per test module."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from ml.train.config import DeviceSettings

ANIMALS = ["cat", "dog", "horse", "owl", "fox", "bear", "wolf", "crow", "frog", "goat", "duck", "mole"]
FOODS = ["fish", "bones", "hay", "mice", "berries", "honey", "meat", "seeds", "flies", "grass", "bread", "worms"]
PLACES = ["barn", "forest", "river", "field", "cave", "garden", "pond", "hill"]
VERBS = {"eats": "uses", "contains": "contains", "returns": "returns", "raises": "raises"}


def _sentence(rng: random.Random) -> str:
    i = rng.randrange(len(ANIMALS))
    return f"The {ANIMALS[i]} eats {FOODS[i]} in the {PLACES[rng.randrange(len(PLACES))]}."


def make_texts(n_docs: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(_sentence(rng) for _ in range(rng.randint(4, 9))) for _ in range(n_docs)]


def make_inputs(root: Path, n_docs: int = 160) -> dict[str, str]:
    """Upstream version directories for every checkpoint, written with the real ml/ writers."""
    from ml.datasets.sft import chat_prompt, chat_response
    from ml.relation_triples.base import RELATIONS
    from ml.tokenized_corpus import build_tokenized_corpus
    from ml.tokenizer import TokenizerConfig, build_tokenizer

    root = Path(root)
    texts = make_texts(n_docs)
    n_val = max(8, n_docs // 8)
    train_t, val_t = texts[n_val:], texts[:n_val]
    tok_dir = root / "tokenizer"
    build_tokenizer(train_t, val_t, tok_dir, TokenizerConfig(vocab_size=420, min_frequency=2))
    corpus = root / "tokenized_corpus"
    frame = lambda ts, s: pl.DataFrame({"doc_id": [f"{s}{i}" for i in range(len(ts))],
                                        "source": ["synthetic.jsonl"] * len(ts), "text": ts})
    build_tokenized_corpus({"train": frame(train_t, "t"), "val": frame(val_t, "v")}, tok_dir, corpus)

    rng = random.Random(1)
    sft, emb, rel = root / "sft_dataset", root / "embedding_dataset", root / "relation_dataset"
    for d in (sft, emb, rel):
        d.mkdir()
    verbs = list(VERBS)
    labels = [*RELATIONS, "no_relation"]
    for split, n in (("train", 192), ("val", 48)):
        rows_sft, rows_emb, rows_rel = [], [], []
        for k in range(n):
            i = rng.randrange(len(ANIMALS))
            a, f, p = ANIMALS[i], FOODS[i], PLACES[rng.randrange(len(PLACES))]
            meta = {"doc_id": f"{split}{k}", "source": "synthetic.jsonl"}
            rows_sft.append({"prompt": chat_prompt(f"What does the {a} eat?", system=""),
                             "response": chat_response(f"The {a} eats {f}."), "subject": a, "relation": "uses",
                             "object": f, **meta})
            rows_emb.append({"anchor": f"{a} in the {p}", "positive": f"The {a} lives in the {p} and eats {f}.",
                             "kind": "title_chunk", **meta})
            v = verbs[k % len(verbs)]
            rows_rel.append({"text": f"The <e1>{a}</e1> {v} <e2>{f}</e2> near the {p}.", "label": VERBS[v],
                             "chunk_id": f"c{k}", **meta})
        pl.DataFrame(rows_sft).write_parquet(sft / f"{split}.parquet")
        pl.DataFrame(rows_emb).write_parquet(emb / f"{split}.parquet")
        pl.DataFrame(rows_rel).write_parquet(rel / f"{split}.parquet")
    (rel / "labels.json").write_text(json.dumps(labels))
    return {"tokenizer": str(tok_dir), "tokenized_corpus": str(corpus), "sft_dataset": str(sft),
            "embedding_dataset": str(emb), "relation_dataset": str(rel)}


TINY_LOOP = {"batch_size": 8, "lr": 3e-3, "warmup_steps": 3, "eval_every": 10, "eval_batches": 4,
             "save_every": 10, "keep_last": 2, "log_every": 2}
TINY = {
    "lm_checkpoint": {"model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "seq_len": 32},
                      "train": {**TINY_LOOP, "max_steps": 30}},
    "lora_adapter": {"model": {"mode": "lora", "lora": {"r": 4, "alpha": 8}, "max_len": 64},
                     "train": {**TINY_LOOP, "max_steps": 20, "lr": 1e-2}},
    "embedding_checkpoint": {"model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_len": 32},
                             "train": {**TINY_LOOP, "max_steps": 30}},
    # a from-scratch classifier sits on a plateau (uniform over the classes) before it finds the verb
    "relation_checkpoint": {"model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_len": 32},
                            "train": {**TINY_LOOP, "max_steps": 150, "eval_every": 50, "save_every": 50}},
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    return make_inputs(tmp_path_factory.mktemp("train_inputs"))


def train_one(asset: str, settings: dict, inputs: dict, out: Path, work: Path | None = None,
              device: DeviceSettings | None = None) -> dict:
    from ml.train.run import TrainSpec, run_training

    spec = TrainSpec(asset=asset, settings=settings, inputs=inputs, out_dir=str(out),
                     work_dir=str(work) if work else None, device=device or DeviceSettings(device="cpu", seed=0, threads=1))
    return run_training(spec, log=lambda m: None)


@pytest.fixture(scope="module")
def lm_version(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "v"
    train_one("lm_checkpoint", TINY["lm_checkpoint"], inputs, out)
    return out


# dropout on, two micro-batches per step, more than two epochs: every piece of state matters on resume
RESUME_CFG = {"model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "seq_len": 32, "dropout": 0.1},
              "train": {**TINY_LOOP, "max_steps": 40, "grad_accum_steps": 2, "save_every": 10, "eval_every": 10,
                        "log_every": 4, "keep_last": 1}}  # logs at 8 and 12 straddle the step-10 checkpoint
