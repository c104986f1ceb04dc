"""The whole pipeline on tiny settings, shared by the end-to-end tests: ``TINY`` (a run-config profile
that materializes every asset in seconds), landing-zone lines built from the sample corpus
(``corpus_lines``, ``preference_lines``), and ``failure_text`` (a failed run's step errors)."""

import json

import dagster as dg

from ml.sample_corpus import build_sample_corpus

SPLIT = {"seed": 7, "val_ratio": 0.2}
LOOP = {"batch_size": 8, "lr": 3e-3, "warmup_steps": 3, "eval_every": 10, "eval_batches": 2, "save_every": 10,
        "log_every": 2}
SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2}
# A run-config profile for seconds, not minutes: in-process execution (no process per step),
# a tiny tokenizer and datasets, tiny models and a handful of training steps.
TINY = {
    "execution": {"config": {"in_process": {}}},
    "ops": {
        "tokenizer": {"config": {"vocab_size": 512, **SPLIT}},
        "tokenized_corpus": {"config": {"shard_tokens": 50_000, **SPLIT}},
        "embedding_dataset": {"config": dict(SPLIT)},
        "relation_dataset": {"config": dict(SPLIT)},
        "sft_dataset": {"config": dict(SPLIT)},
        "gnn_dataset": {"config": {**SPLIT, "negatives": 3}},
        "ner_dataset": {"config": dict(SPLIT)},
        "lm_checkpoint": {"config": {"model": {**SMALL, "seq_len": 32}, "train": {**LOOP, "max_steps": 20}}},
        "lora_adapter": {"config": {"model": {"lora": {"r": 4, "alpha": 8}},
                                    "train": {**LOOP, "max_steps": 20, "lr": 1e-2}}},
        "embedding_checkpoint": {"config": {"model": {**SMALL, "max_len": 32}, "train": {**LOOP, "max_steps": 10}}},
        "relation_checkpoint": {"config": {"model": {**SMALL, "max_len": 32}, "train": {**LOOP, "max_steps": 10}}},
        "gnn_checkpoint": {"config": {"model": {"hidden_size": 16, "num_layers": 1, "feature_max_len": 32},
                                      "train": {**LOOP, "max_steps": 10}}},
        "ner_checkpoint": {"config": {"model": {**SMALL, "max_len": 32}, "train": {**LOOP, "max_steps": 10}}},
        "preference_dataset": {"config": dict(SPLIT)},
        "dpo_adapter": {"config": {"model": {"lora": {"r": 4, "alpha": 8}, "max_len": 192},
                                   "train": {**LOOP, "max_steps": 30, "lr": 1e-2},
                                   "checks": {"min_loss_drop": 0.0}}},  # as configs/debug.yaml: DPO starts at ln 2
        "onnx_bundle": {"config": {"samples": 4, "measure_latency": False, "per_channel": "off"}},
    },
}
def corpus_lines(n: int = 160) -> list[str]:
    docs = [d for src in build_sample_corpus(n).values() for d in src]
    return [json.dumps({k: d[k] for k in ("title", "content", "url")}) for d in docs]


def preference_lines(n: int = 40) -> list[str]:
    """User-supplied DPO pairs (landing/preferences/): the answer about a document vs another's."""
    docs = [d for src in build_sample_corpus(n).values() for d in src][:n]
    first = [d["content"].split(". ")[0][:200] for d in docs]
    return [json.dumps({"prompt": f"What is {d['title']} about?", "chosen": first[i],
                        "rejected": first[(i + 1) % len(docs)]}) for i, d in enumerate(docs)]


def failure_text(instance, run_id: str) -> str:
    events = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE})
    out = []
    for e in events:
        error = getattr(e.dagster_event.event_specific_data, "error", None)
        out.append(f"{e.user_message}\n{error.to_string() if error else ''}")
    return "\n".join(out)
