"""SFT dataset: instruction / response pairs built from relation triples, and ``encode_sft``.

``encode_sft`` encodes prompt and response separately and concatenates them, so no BPE merge crosses the
boundary, and puts -100 on exactly the prompt tokens. The chat template: DESIGN.md, "Module notes".
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ml.datasets import split_counts
from ml.datasets.mixing import example_shares, plan_docs
from ml.datasets.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO, drop_cross_split_duplicates
from ml.relation_triples.base import RELATIONS
from ml.tokenizer import ASSISTANT, END, SYSTEM, USER

IGNORE_INDEX = -100
DEFAULT_SYSTEM = "You answer questions about software documentation. Give the answer, then quote the evidence."

# one question per relation label; {s} is the subject
QUESTIONS: dict[str, str] = {
    "is_a": "What is {s}?",
    "subclass_of": "What is {s} a subclass of?",
    "instance_of": "What is {s} an instance of?",
    "part_of": "What is {s} part of?",
    "member_of": "What is {s} a member of?",
    "founded_in": "When or where was {s} founded?",
    "born_in": "Where or when was {s} born?",
    "located_in": "Where is {s} located or defined?",
    "created_by": "Who or what created {s}?",
    "uses": "What does {s} use?",
    "returns": "What does {s} return?",
    "contains": "What does {s} contain?",
    "has": "What does {s} have?",
    "raises": "What does {s} raise?",
    "defaults_to": "What does {s} default to?",
    "alias_of": "What is {s} another name for?",
    "equivalent_to": "What is {s} equivalent to?",
    "provides": "What does {s} provide?",
    "accepts": "What does {s} accept?",
}
assert set(QUESTIONS) == set(RELATIONS), "every relation label needs a question"

SCHEMA = {"prompt": pl.String, "response": pl.String, "subject": pl.String, "relation": pl.String,
          "object": pl.String, "doc_id": pl.String, "source": pl.String}


def chat_prompt(question: str, system: str = DEFAULT_SYSTEM) -> str:
    """The chat-template prefix up to and including ``<|assistant|>`` (same text as the tokenizer's
    saved chat_template with add_generation_prompt=True)."""
    head = f"{SYSTEM}{system}{END}" if system else ""
    return f"{head}{USER}{question}{END}{ASSISTANT}"


def chat_response(answer: str) -> str:
    return f"{answer}{END}"


def _ids(tokenizer, text: str) -> list[int]:
    """Token ids of text with a PreTrainedTokenizerFast or a raw tokenizers.Tokenizer; no BOS/EOS added."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return list(tokenizer.encode(text, add_special_tokens=False).ids)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _counts(tokenizer, texts: list[str]) -> list[int]:
    """Token counts of texts encoded separately (as encode_sft encodes them), in one batch call."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_sft(tokenizer, prompt: str, response: str, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of ``prompt + response``; labels are -100 on every prompt token and the
    response ids elsewhere. Prompt and response are encoded separately (no merge across the boundary).
    Longer than ``max_len``: the response is cut at the end; a prompt that leaves no room for one
    response token raises ValueError (``build_sft`` drops such examples beforehand)."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    p, r = _ids(tokenizer, prompt), _ids(tokenizer, response)
    if not r:
        raise ValueError("empty response: nothing to learn from this example")
    if len(p) >= max_len:
        raise ValueError(f"prompt has {len(p)} tokens: no room for the response within max_len={max_len}")
    r = r[: max_len - len(p)]
    return p + r, [IGNORE_INDEX] * len(p) + r


@dataclass(frozen=True)
class SftConfig:
    seed: int = DEFAULT_SEED
    val_ratio: float = DEFAULT_VAL_RATIO
    test_ratio: float = 0.0
    system_prompt: str = DEFAULT_SYSTEM
    max_objects: int = 3
    """Objects listed in one answer when a (subject, relation) has several."""
    max_len: int = 256
    """Examples whose prompt + response exceed this many tokens are dropped (reason too_long)."""
    min_confidence: float = 0.0
    mix_weights: tuple[tuple[str, float], ...] = ()


def _answer(objects: list[str], evidence: str) -> str:
    ev = " ".join(evidence.split())
    return f"{'; '.join(objects)}\nEvidence: \"{ev}\""


def build_sft(triples: pl.DataFrame, chunks: pl.DataFrame, docs: pl.DataFrame, cfg: SftConfig,
              tokenizer=None) -> tuple[dict[str, pl.DataFrame], dict[str, float]]:
    """Train/val SFT examples from ``triples`` (joined to chunks -> doc_id, docs -> source).

    One example per (doc, subject, relation): its objects (highest confidence first, at most
    ``max_objects``) and the evidence of the best triple. Every triple is accounted for in the stats:
    used (``triples_merged`` of them share an example with a better triple), ``skipped.no_chunk``,
    ``skipped.low_confidence``, ``skipped.unknown_relation``, ``skipped.too_long``, ``skipped.mixed_out``,
    ``skipped.duplicate_question`` (a split asks it already, from another document) and
    ``skipped.question_in_train`` (a val question that train asks too).
    """
    stats: dict[str, float] = {"triples_in": triples.height}
    t = triples.join(chunks.select("chunk_id", "doc_id"), on="chunk_id", how="left") \
        .join(docs.select("doc_id", "source"), on="doc_id", how="left")
    orphan = t["doc_id"].is_null() | t["source"].is_null()
    stats["skipped.no_chunk"] = int(orphan.sum())
    t = t.filter(~orphan)
    unknown = ~t["relation"].is_in(list(QUESTIONS))
    stats["skipped.unknown_relation"] = int(unknown.sum())
    t = t.filter(~unknown)
    low = t["confidence"] < cfg.min_confidence
    stats["skipped.low_confidence"] = int(low.sum())
    t = t.filter(~low).with_columns(subject=pl.col("subject").str.strip_chars(),
                                    object=pl.col("object").str.strip_chars())
    # one example per (doc, subject, relation); distinct objects ordered by confidence
    t = t.sort(["doc_id", "subject", "relation", "confidence", "object"], descending=[False, False, False, True, False])
    grouped = t.group_by(["doc_id", "source", "subject", "relation"], maintain_order=True).agg(
        objects=pl.col("object").unique(maintain_order=True), evidence=pl.col("evidence").first(), n=pl.len())
    stats["triples_merged"] = t.height - grouped.height  # folded into an example with the same question
    rows = []
    for g in grouped.iter_rows(named=True):
        question = QUESTIONS[g["relation"]].format(s=g["subject"])
        objs = g["objects"][: cfg.max_objects]
        rows.append({"prompt": chat_prompt(question, cfg.system_prompt),
                     "response": chat_response(_answer(objs, g["evidence"])),
                     "subject": g["subject"], "relation": g["relation"], "object": "; ".join(objs),
                     "doc_id": g["doc_id"], "source": g["source"], "n": g["n"]})
    ex = pl.DataFrame(rows, schema={**SCHEMA, "n": pl.UInt32})
    if tokenizer is not None and ex.height:
        n_tokens = [p + r for p, r in zip(_counts(tokenizer, ex["prompt"].to_list()),
                                          _counts(tokenizer, ex["response"].to_list()))]
        fits = [n <= cfg.max_len for n in n_tokens]
        too_long = ex.filter(~pl.Series(fits))
        stats["skipped.too_long"] = int(too_long["n"].sum() or 0)
        ex = ex.filter(pl.Series(fits))
    else:
        stats["skipped.too_long"] = 0
    plan = plan_docs(docs, cfg.seed, cfg.val_ratio, dict(cfg.mix_weights), test_ratio=cfg.test_ratio)
    stats.update(plan.stats)
    parts = plan.assign(ex)
    stats["skipped.mixed_out"] = int(parts["mixed_out"]["n"].sum() or 0)
    # the same question from two documents of one split would teach two answers: keep the first
    split_names = ("train", "val", "test")
    uniq = {k: parts[k].unique(subset="prompt", keep="first", maintain_order=True) for k in split_names}
    stats["skipped.duplicate_question"] = sum(int(parts[k]["n"].sum() or 0) - int(uniq[k]["n"].sum() or 0)
                                              for k in split_names)
    stats["skipped.question_in_train"] = 0
    kept = {"train": uniq["train"]}
    for k in ("val", "test"):  # a held-out question asked in an earlier split is dropped
        k_kept, _ = drop_cross_split_duplicates(pl.concat(list(kept.values())), uniq[k], ["prompt"])
        stats["skipped.question_in_train"] += int(uniq[k]["n"].sum() or 0) - int(k_kept["n"].sum() or 0)
        kept[k] = k_kept
    out = {k: kept[k].select(list(SCHEMA)) for k in split_names}
    stats.update(example_shares(out["train"]))
    stats.update(split_counts(out, "relation", QUESTIONS))
    used = sum(int(kept[k]["n"].sum() or 0) for k in split_names)
    stats["triples_used"] = used
    return out, stats
