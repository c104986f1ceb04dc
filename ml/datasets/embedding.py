"""Embedding dataset: (anchor, positive) pairs for contrastive training with in-batch negatives.

Both kinds of pair (``title_chunk``, ``adjacent_chunks``) stay inside one document, and a text may occur
once per split, so an in-batch negative is always a negative. The pair kinds: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from ml.datasets import split_counts
from ml.datasets.mixing import example_shares, plan_docs
from ml.datasets.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO, doc_unit

SCHEMA = {"anchor": pl.String, "positive": pl.String, "kind": pl.String, "doc_id": pl.String, "source": pl.String}
_FIRST_SENTENCE = re.compile(r"^\s*(.+?[.!?:])(?=\s|$)", re.S)


@dataclass(frozen=True)
class EmbeddingConfig:
    seed: int = DEFAULT_SEED
    val_ratio: float = DEFAULT_VAL_RATIO
    test_ratio: float = 0.0
    title_pairs_per_doc: int = 1
    adjacent_pairs_per_doc: int = 2
    min_chars: int = 32
    """Anchors and positives shorter than this (after trimming) are not used."""
    min_title_chars: int = 3
    max_chars: int = 2000
    """Texts are cut to this many characters (at a word boundary)."""
    mix_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.title_pairs_per_doc < 0 or self.adjacent_pairs_per_doc < 0:
            raise ValueError("pairs per doc must be >= 0")


def first_sentence(text: str, max_chars: int = 300) -> str:
    m = _FIRST_SENTENCE.match(text)
    s = m.group(1) if m else text
    return " ".join(s.split())[:max_chars]


def _clip(text: str, max_chars: int) -> str:
    """Whitespace collapsed to single spaces, cut at a word boundary to at most max_chars."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut.rsplit(None, 1)[0] if " " in cut else cut


def _doc_pairs(doc: dict, chunks: list[dict], title_ok: bool, cfg: EmbeddingConfig, stats: dict) -> list[dict]:
    pairs: list[dict] = []

    def add(anchor: str, positive: str, kind: str) -> None:
        anchor, positive = _clip(anchor, cfg.max_chars), _clip(positive, cfg.max_chars)
        if len(positive) < cfg.min_chars or (kind != "title_chunk" and len(anchor) < cfg.min_chars):
            stats[f"skipped.{kind}.short_text"] = stats.get(f"skipped.{kind}.short_text", 0) + 1
            return
        pairs.append({"anchor": anchor, "positive": positive, "kind": kind,
                      "doc_id": doc["doc_id"], "source": doc["source"]})

    if cfg.title_pairs_per_doc and chunks:
        if title_ok:
            anchor, strip = " ".join(doc["title"].split()), None
        else:
            anchor = strip = first_sentence(doc["text"])
            stats["title_chunk.first_sentence_anchor"] = stats.get("title_chunk.first_sentence_anchor", 0) + 1
        if strip is not None and len(strip) < cfg.min_chars:
            stats["skipped.title_chunk.no_anchor"] = stats.get("skipped.title_chunk.no_anchor", 0) + 1
        else:
            order = [0] + sorted(range(1, len(chunks)),
                                 key=lambda i: doc_unit(cfg.seed, chunks[i]["chunk_id"], "emb-title"))
            for i in order[: cfg.title_pairs_per_doc]:
                positive = " ".join(chunks[i]["text"].split())
                if strip:  # the anchor's own text must not be inside its positive
                    positive = positive.replace(strip, " ", 1)
                add(anchor, positive, "title_chunk")
    if cfg.adjacent_pairs_per_doc and len(chunks) >= 2:
        idx = sorted(range(len(chunks) - 1), key=lambda i: doc_unit(cfg.seed, chunks[i]["chunk_id"], "emb-adj"))
        for i in sorted(idx[: cfg.adjacent_pairs_per_doc]):
            a, b = chunks[i], chunks[i + 1]
            overlap = max(0, a["char_end"] - b["char_start"])
            add(a["text"], b["text"][overlap:], "adjacent_chunks")
    elif cfg.adjacent_pairs_per_doc:
        stats["adjacent_chunks.single_chunk_docs"] = stats.get("adjacent_chunks.single_chunk_docs", 0) + 1
    return pairs


def _unique_texts(frame: pl.DataFrame, banned: set[str]) -> tuple[pl.DataFrame, int, int]:
    """Keep a pair only if neither text was used before in this split (nor is in ``banned``)."""
    seen = set(banned)
    keep, dup_within, in_train = [], 0, 0
    for a, p in zip(frame["anchor"], frame["positive"]):
        if a in banned or p in banned:
            keep.append(False)
            in_train += 1
        elif a in seen or p in seen or a == p:
            keep.append(False)
            dup_within += 1
        else:
            keep.append(True)
            seen.update((a, p))
    return frame.filter(pl.Series(keep, dtype=pl.Boolean)), dup_within, in_train


def build_embedding(chunks: pl.DataFrame, docs: pl.DataFrame, cfg: EmbeddingConfig
                    ) -> tuple[dict[str, pl.DataFrame], dict[str, float]]:
    """Train/val pairs; ``chunks``: chunk_id, doc_id, chunk_index, char_start, char_end, text;
    ``docs``: doc_id, title, source, text."""
    stats: dict[str, float] = {"docs_in": docs.height, "chunks_in": chunks.height}
    titles = docs.with_columns(t=pl.col("title").str.strip_chars().str.to_lowercase())
    shared = titles.group_by("t").len().filter(pl.col("len") > 1)["t"]
    title_ok = dict(zip(titles["doc_id"], (titles["t"].str.len_chars() >= cfg.min_title_chars)
                        & ~titles["t"].is_in(shared.implode())))
    by_doc: dict[str, list[dict]] = {}
    for c in chunks.sort(["doc_id", "chunk_index"]).iter_rows(named=True):
        by_doc.setdefault(c["doc_id"], []).append(c)
    rows: list[dict] = []
    for d in docs.iter_rows(named=True):
        rows.extend(_doc_pairs(d, by_doc.get(d["doc_id"], []), bool(title_ok[d["doc_id"]]), cfg, stats))
    pairs = pl.DataFrame(rows, schema=SCHEMA)
    plan = plan_docs(docs, cfg.seed, cfg.val_ratio, dict(cfg.mix_weights), test_ratio=cfg.test_ratio)
    stats.update(plan.stats)
    parts = plan.assign(pairs)
    stats["skipped.mixed_out"] = parts["mixed_out"].height
    train, dup_t, _ = _unique_texts(parts["train"], set())
    banned = set(train["anchor"].to_list()) | set(train["positive"].to_list())
    val, dup_v, in_train = _unique_texts(parts["val"], banned)
    banned |= set(val["anchor"].to_list()) | set(val["positive"].to_list())
    test, dup_x, in_train_x = _unique_texts(parts["test"], banned)  # test: no text of train or val
    stats["skipped.duplicate_text"] = dup_t + dup_v + dup_x
    stats["skipped.text_in_train"] = in_train + in_train_x
    stats["pairs_built"] = pairs.height
    out = {"train": train, "val": val, "test": test}
    stats.update(split_counts(out, "kind", ("title_chunk", "adjacent_chunks")))
    stats["docs_without_pairs"] = docs.height - pairs["doc_id"].n_unique()
    stats.update(example_shares(train))
    return out, stats
