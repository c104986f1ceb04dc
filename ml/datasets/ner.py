"""NER dataset: BIO token tags from the relation extractor's subject/object spans (weak supervision).

Tags are what the rule extractor found, not gold annotations, and only sentences with triples are used (its
misses would become false ``O`` tags). Entity types, span rules and token alignment: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ml.datasets.mixing import example_shares, plan_docs
from ml.datasets.relation import span_pattern
from ml.datasets.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO, drop_cross_split_duplicates

ENTITY_TYPES = ["EXCEPTION", "VALUE", "AGENT", "CODE", "CONCEPT"]
TAGS: list[str] = ["O", *(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))]
ROLE_TYPES = {("raises", "object"): "EXCEPTION", ("defaults_to", "object"): "VALUE", ("returns", "object"): "VALUE",
              ("created_by", "object"): "AGENT", ("born_in", "subject"): "AGENT"}
_EXC = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Warning)$")
_CODE = re.compile(r"^(?:[A-Za-z_]\w*\.[\w.]*\w|\w*_\w*|[A-Za-z_][\w.]*\(\)|[a-z]+[A-Z]\w*)$")
ENTITY = pl.Struct({"start": pl.Int32, "end": pl.Int32, "type": pl.String, "text": pl.String})
SCHEMA = {"text": pl.String, "input_ids": pl.List(pl.Int32), "tags": pl.List(pl.String), "entities": pl.List(ENTITY),
          "doc_id": pl.String, "chunk_id": pl.String, "source": pl.String}


@dataclass(frozen=True)
class NerConfig:
    seed: int = DEFAULT_SEED
    val_ratio: float = DEFAULT_VAL_RATIO
    test_ratio: float = 0.0
    max_len: int = 96
    """Sentences of more tokens are skipped (too_long)."""
    min_confidence: float = 0.0
    mix_weights: tuple[tuple[str, float], ...] = ()


def entity_type(name: str, relation: str, role: str) -> str:
    """The weak type of a subject/object (see the module docstring)."""
    if (relation, role) in ROLE_TYPES:
        return ROLE_TYPES[(relation, role)]
    word = name.strip("`'\"* ")
    if _EXC.match(word):
        return "EXCEPTION"
    if " " not in word and _CODE.match(word):
        return "CODE"
    return "CONCEPT"


def find_span(sentence: str, name: str) -> tuple[int, int] | None:
    p = span_pattern(name)
    if p is None:
        return None
    m = p.search(sentence) or re.compile(p.pattern, re.I).search(sentence)
    if m is None:
        return None
    a, b = m.start(), m.end()
    while a < b and sentence[a] in "*_`\"'‘’“”":  # the markup around the words is not the entity
        a += 1
    while b > a and sentence[b - 1] in "*_`\"'‘’“”":
        b -= 1
    return (a, b) if a < b else None


def bio_tags(offsets: list[tuple[int, int]], text: str, entities: list[dict]) -> list[str]:
    """One tag per token: B-/I-TYPE on tokens overlapping an entity span (leading whitespace excluded)."""
    tags = ["O"] * len(offsets)
    for e in entities:
        first = True
        for i, (a, b) in enumerate(offsets):
            while a < b and text[a].isspace():
                a += 1
            if a < e["end"] and b > e["start"] and a < b:
                tags[i] = f"{'B' if first else 'I'}-{e['type']}"
                first = False
    return tags


def decode_entities(tags: list[str]) -> set[tuple[int, int, str]]:
    """(first token, last token + 1, type) of every entity in a BIO sequence (conlleval rules: an I- tag
    that does not continue an entity of its type starts one)."""
    out, start, kind = set(), None, None
    for i, t in enumerate([*tags, "O"]):
        p, _, ty = t.partition("-")
        if start is not None and (p != "I" or ty != kind):
            out.add((start, i, kind))
            start, kind = None, None
        if p == "B" or (p == "I" and start is None):
            start, kind = i, ty
    return out


def _sentence_examples(triples: pl.DataFrame, tokenizer, cfg: NerConfig, stats: dict) -> list[dict]:
    by_sentence: dict[tuple[str, str], list[dict]] = {}
    for t in triples.sort("chunk_id", "evidence_start", "subject", "object").iter_rows(named=True):
        by_sentence.setdefault((t["chunk_id"], t["evidence"]), []).append(t)
    rows = []
    for (chunk_id, sentence), ts in by_sentence.items():
        found: dict[tuple[int, int], dict] = {}
        for t in ts:
            for role in ("subject", "object"):
                span = find_span(sentence, t[role])
                if span is None:
                    stats[f"skipped.{role}_not_found"] = stats.get(f"skipped.{role}_not_found", 0) + 1
                    continue
                ty = entity_type(t[role], t["relation"], role)
                old = found.get(span)
                if old is None or ENTITY_TYPES.index(ty) < ENTITY_TYPES.index(old["type"]):
                    found[span] = {"start": span[0], "end": span[1], "type": ty, "text": sentence[span[0]:span[1]]}
        kept: list[dict] = []
        for e in sorted(found.values(), key=lambda e: (-(e["end"] - e["start"]), e["start"])):
            if any(e["start"] < k["end"] and k["start"] < e["end"] for k in kept):
                stats["skipped.overlapping_entity"] = stats.get("skipped.overlapping_entity", 0) + 1
                continue
            kept.append(e)
        if not kept:
            stats["skipped.no_entity"] = stats.get("skipped.no_entity", 0) + 1
            continue
        enc = tokenizer(sentence, return_offsets_mapping=True, add_special_tokens=False)
        if len(enc["input_ids"]) > cfg.max_len:
            stats["skipped.too_long"] = stats.get("skipped.too_long", 0) + 1
            continue
        kept.sort(key=lambda e: e["start"])
        tags = bio_tags([tuple(o) for o in enc["offset_mapping"]], sentence, kept)
        t0 = ts[0]
        rows.append({"text": sentence, "input_ids": list(enc["input_ids"]), "tags": tags, "entities": kept,
                     "doc_id": t0["doc_id"], "chunk_id": chunk_id, "source": t0["source"]})
        for e in kept:
            stats[f"entities.{e['type']}"] = stats.get(f"entities.{e['type']}", 0) + 1
    return rows


def build_ner(triples: pl.DataFrame, chunks: pl.DataFrame, docs: pl.DataFrame, cfg: NerConfig, tokenizer
              ) -> tuple[dict[str, pl.DataFrame], dict[str, float]]:
    """Train/val BIO examples; ``chunks``: chunk_id, doc_id; ``docs``: doc_id, source."""
    stats: dict[str, float] = {"triples_in": triples.height}
    chunks = chunks.select("chunk_id", "doc_id").join(docs.select("doc_id", "source"), on="doc_id", how="inner")
    t = triples.join(chunks, on="chunk_id", how="left")
    orphan = t["doc_id"].is_null()
    stats["skipped.no_chunk"] = int(orphan.sum())
    t = t.filter(~orphan)
    low = t["confidence"] < cfg.min_confidence
    stats["skipped.low_confidence"] = int(low.sum())
    t = t.filter(~low)
    plan = plan_docs(docs, cfg.seed, cfg.val_ratio, dict(cfg.mix_weights), test_ratio=cfg.test_ratio)
    stats.update(plan.stats)
    parts = plan.assign(t)
    stats["skipped.mixed_out"] = parts["mixed_out"].height
    out = {}
    for split in ("train", "val", "test"):
        frame = pl.DataFrame(_sentence_examples(parts[split], tokenizer, cfg, stats), schema=SCHEMA)
        out[split] = frame.unique(subset="text", keep="first", maintain_order=True)
        stats[f"skipped.duplicate_text.{split}"] = frame.height - out[split].height
    out["val"], stats["skipped.text_in_train"] = drop_cross_split_duplicates(out["train"], out["val"], ["text"])
    out["test"], in_earlier = drop_cross_split_duplicates(pl.concat([out["train"], out["val"]]), out["test"], ["text"])
    stats["skipped.text_in_train"] += in_earlier
    for split, frame in out.items():
        stats[f"{split}.tokens"] = int(frame["input_ids"].list.len().sum() or 0)
        counts = frame.select(pl.col("entities").explode().struct.field("type")).to_series().value_counts() \
            if frame.height else None
        for ty in ENTITY_TYPES:
            stats[f"{split}.entity.{ty}"] = 0
        if counts is not None:
            for ty, n in counts.iter_rows():
                if ty is not None:
                    stats[f"{split}.entity.{ty}"] = n
        stats[f"{split}.examples"] = frame.height
        stats[f"{split}.docs"] = frame["doc_id"].n_unique()
    stats.update(example_shares(out["train"]))
    return out, stats


def write_labels(out: Path) -> None:
    (Path(out) / "labels.json").write_text(json.dumps(TAGS, indent=2) + "\n", encoding="utf-8")
