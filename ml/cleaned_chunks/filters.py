"""Document quality rules: Gopher quality, Gopher repetition, C4 document rules (batch-wise, no Python loop per document).

Rules run in ``RULES`` order and the first that fires is the recorded reason; every threshold is a
``FilterConfig`` field and ``None`` switches its rule off. Definitions: DESIGN.md, "Module notes".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class FilterConfig:
    gopher_quality: bool = True
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2

    gopher_repetition: bool = True
    max_dup_line_frac: float | None = 0.30
    max_dup_para_frac: float | None = 0.30
    max_dup_line_char_frac: float | None = 0.20
    max_dup_para_char_frac: float | None = 0.20
    max_top_ngram_char_frac: tuple[tuple[int, float], ...] | None = ((2, 0.20), (3, 0.18), (4, 0.16))
    max_dup_ngram_char_frac: tuple[tuple[int, float], ...] | None = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))

    c4: bool = True
    c4_min_sentences: int | None = 3
    c4_lorem_ipsum: bool = True
    c4_curly_bracket: bool = False  # off by default: technical text is full of braces


@dataclass(frozen=True)
class Rule:
    reason: str
    family: str
    describe: str
    fails: Callable[[FilterConfig], pl.Expr | None]  # over the features frame; None: rule off


def _thr(value, make):
    return None if value is None else make(value)


RULES: tuple[Rule, ...] = (
    Rule("empty_after_cleaning", "cleaning", "no text left after cleaning",
         lambda c: pl.col("n_words") == 0),
    Rule("c4_lorem_ipsum", "c4", "placeholder text ('lorem ipsum')",
         lambda c: pl.col("has_lorem") if c.c4_lorem_ipsum else None),
    Rule("c4_curly_bracket", "c4", "contains a curly bracket (code, not prose)",
         lambda c: pl.col("has_curly") if c.c4_curly_bracket else None),
    Rule("gopher_too_few_words", "gopher_quality", "fewer words than min_words",
         lambda c: _thr(c.min_words, lambda v: pl.col("n_words") < v)),
    Rule("gopher_too_many_words", "gopher_quality", "more words than max_words",
         lambda c: _thr(c.max_words, lambda v: pl.col("n_words") > v)),
    Rule("gopher_mean_word_length", "gopher_quality", "mean word length outside [min, max]",
         lambda c: (pl.col("mean_word_len") < (c.min_mean_word_length or 0))
         | (pl.col("mean_word_len") > (c.max_mean_word_length or float("inf")))
         if (c.min_mean_word_length, c.max_mean_word_length) != (None, None) else None),
    Rule("gopher_symbol_ratio", "gopher_quality", "too many '#' and '...' per word",
         lambda c: _thr(c.max_symbol_word_ratio, lambda v: pl.col("symbol_ratio") > v)),
    Rule("gopher_bullet_lines", "gopher_quality", "too many lines start with a bullet",
         lambda c: _thr(c.max_bullet_lines_ratio, lambda v: pl.col("bullet_frac") > v)),
    Rule("gopher_ellipsis_lines", "gopher_quality", "too many lines end with an ellipsis",
         lambda c: _thr(c.max_ellipsis_lines_ratio, lambda v: pl.col("ellipsis_frac") > v)),
    Rule("gopher_alpha_words", "gopher_quality", "too few words contain a letter",
         lambda c: _thr(c.min_alpha_words_ratio, lambda v: pl.col("alpha_frac") < v)),
    Rule("gopher_stop_words", "gopher_quality", "fewer English stop words than min_stop_words",
         lambda c: _thr(c.min_stop_words, lambda v: pl.col("n_stop") < v)),
    Rule("gopher_dup_lines", "gopher_repetition", "too many duplicate lines",
         lambda c: _thr(c.max_dup_line_frac, lambda v: pl.col("dup_line_frac") > v)),
    Rule("gopher_dup_paragraphs", "gopher_repetition", "too many duplicate paragraphs",
         lambda c: _thr(c.max_dup_para_frac, lambda v: pl.col("dup_para_frac") > v)),
    Rule("gopher_dup_line_chars", "gopher_repetition", "too many characters in duplicate lines",
         lambda c: _thr(c.max_dup_line_char_frac, lambda v: pl.col("dup_line_char_frac") > v)),
    Rule("gopher_dup_paragraph_chars", "gopher_repetition", "too many characters in duplicate paragraphs",
         lambda c: _thr(c.max_dup_para_char_frac, lambda v: pl.col("dup_para_char_frac") > v)),
    Rule("gopher_top_ngram", "gopher_repetition", "one n-gram (n=2..4) covers too much of the text",
         lambda c: pl.any_horizontal([pl.col(f"top_{n}gram") > v for n, v in c.max_top_ngram_char_frac])
         if c.max_top_ngram_char_frac else None),
    Rule("gopher_dup_ngrams", "gopher_repetition", "repeated n-grams (n=5..10) cover too much of the text",
         lambda c: pl.any_horizontal([pl.col(f"dup_{n}gram") > v for n, v in c.max_dup_ngram_char_frac])
         if c.max_dup_ngram_char_frac else None),
    Rule("c4_too_few_sentences", "c4", "fewer sentences than c4_min_sentences",
         lambda c: _thr(c.c4_min_sentences, lambda v: pl.col("n_sentences") < v)),
)
REASONS = tuple(r.reason for r in RULES)
FAMILIES = ("gopher_quality", "gopher_repetition", "c4")  # each is also the FilterConfig switch of that name


def active_rules(cfg: FilterConfig) -> list[tuple[Rule, pl.Expr]]:
    out = []
    for rule in RULES:
        if rule.family in FAMILIES and not getattr(cfg, rule.family):
            continue
        expr = rule.fails(cfg)
        if expr is not None:
            out.append((rule, expr))
    return out


def first_failing_reason(features: pl.DataFrame, cfg: FilterConfig) -> pl.Series:
    """Reason code of the first rule each document fails, or null if it passes all."""
    rules = active_rules(cfg)
    if not rules:
        return pl.Series("reason", [None] * features.height, dtype=pl.String)
    expr = pl.coalesce([pl.when(e.fill_null(False)).then(pl.lit(r.reason)) for r, e in rules])
    return features.select(expr.alias("reason")).to_series()


# ---- features -----------------------------------------------------------------------------
def text_features(text: pl.Expr) -> list[pl.Expr]:
    n_words = text.str.count_matches(r"\S+")
    n_lines = text.str.count_matches(r"(?m)^[^\n]*\S[^\n]*$")
    safe = lambda e, d: pl.when(d > 0).then(e / d).otherwise(0.0)  # noqa: E731
    return [
        n_words.alias("n_words"),
        safe(text.str.replace_all(r"\s+", "").str.len_chars(), n_words).alias("mean_word_len"),
        safe(text.str.count_matches(r"#|\.\.\.|…"), n_words).alias("symbol_ratio"),
        safe(text.str.count_matches(r"(?m)^[ ]*[•●○▪◦‣∙·*\-–][ ]"), n_lines).alias("bullet_frac"),
        safe(text.str.count_matches(r"(?m)(?:\.\.\.|…)[ ]*$"), n_lines).alias("ellipsis_frac"),
        safe(text.str.count_matches(r"\S*\p{L}\S*"), n_words).alias("alpha_frac"),
        text.str.to_lowercase().str.count_matches(rf"\b(?:{'|'.join(STOP_WORDS)})\b").alias("n_stop"),
        text.str.count_matches(r"[.!?…]+(?:[\"'”’)\]]*)(?:\s|$)").alias("n_sentences"),
        text.str.to_lowercase().str.contains("lorem ipsum").alias("has_lorem"),
        text.str.contains(r"[{}]").alias("has_curly"),
        text.str.len_chars().alias("n_chars"),
    ]


def _dup_fraction(frame: pl.DataFrame, text: str, sep: str, name: str) -> pl.DataFrame:
    """Per doc: share of units (lines or paragraphs) that repeat an earlier one, by count and by chars."""
    units = (frame.select("i", pl.col(text).str.split(sep).alias("u")).explode("u")
             .with_columns(pl.col("u").str.strip_chars()).filter(pl.col("u").str.len_chars() > 0))
    per = units.group_by("i", "u").agg(pl.len().alias("c")).with_columns(L=pl.col("u").str.len_chars())
    agg = per.group_by("i").agg(
        total=pl.col("c").sum(), dup=(pl.col("c") - 1).sum(),
        chars=(pl.col("c") * pl.col("L")).sum(), dup_chars=((pl.col("c") - 1) * pl.col("L")).sum())
    return agg.select("i", (pl.col("dup") / pl.col("total")).alias(f"dup_{name}_frac"),
                      (pl.col("dup_chars") / pl.col("chars")).alias(f"dup_{name}_char_frac"))


@dataclass
class WordArrays:
    """The batch's lower-cased words flattened: doc index, hash and length per word."""

    doc: np.ndarray  # int64, non-decreasing
    hash: np.ndarray  # uint64
    length: np.ndarray  # int64
    n_docs: int

    @classmethod
    def from_texts(cls, texts: pl.Series) -> "WordArrays":
        words = (pl.DataFrame({"t": texts}).with_row_index("i")
                 .select(pl.col("i").cast(pl.Int64), pl.col("t").str.to_lowercase().str.extract_all(r"\S+"))
                 .explode("t").drop_nulls("t"))
        w = words["t"]
        return cls(words["i"].to_numpy(), w.hash(seed=0x5EED).to_numpy(), w.str.len_chars().cast(pl.Int64).to_numpy(),
                   len(texts))

    def ngram_hashes(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(start positions, hashes) of every n-gram that stays inside one document."""
        m = len(self.hash) - n + 1
        if m <= 0:
            return np.empty(0, np.int64), np.empty(0, np.uint64)
        h = self.hash[:m].copy()
        with np.errstate(over="ignore"):
            for k in range(1, n):
                h *= MIX
                h ^= self.hash[k:m + k]
        valid = self.doc[:m] == self.doc[n - 1:m + n - 1]
        return np.nonzero(valid)[0], h[valid]


def _per_doc_sum(doc: np.ndarray, values: np.ndarray, n_docs: int) -> np.ndarray:
    return np.bincount(doc, weights=values, minlength=n_docs)


def repetition_features(words: WordArrays, cfg: FilterConfig, text_chars: np.ndarray) -> dict[str, np.ndarray]:
    """n-gram repetition fractions; denominators are each document's text length in characters."""
    out: dict[str, np.ndarray] = {}
    n_docs = words.n_docs
    denom = np.where(text_chars > 0, text_chars, 1).astype(np.float64)
    for n, _ in cfg.max_top_ngram_char_frac or ():
        pos, h = words.ngram_hashes(n)
        doc = words.doc[pos]
        chars = np.zeros(len(pos), np.int64)
        for k in range(n):
            chars += words.length[pos + k]
        key = pl.Series(h ^ (doc.astype(np.uint64) * MIX))
        grouped = (pl.DataFrame({"key": key, "doc": doc, "chars": chars}).group_by("key")
                   .agg(pl.col("doc").first(), pl.col("chars").first(), pl.len().alias("c"))
                   .group_by("doc").agg((pl.col("chars") * pl.col("c")).max().alias("top")))
        top = np.zeros(n_docs)
        top[grouped["doc"].to_numpy()] = grouped["top"].to_numpy()
        out[f"top_{n}gram"] = np.minimum(top / denom, 1.0)  # overlapping occurrences can exceed 1
    for n, _ in cfg.max_dup_ngram_char_frac or ():
        pos, h = words.ngram_hashes(n)
        doc = words.doc[pos]
        key = pl.Series(h ^ (doc.astype(np.uint64) * MIX))
        repeat = ~key.is_first_distinct().to_numpy()
        cover = np.zeros(len(words.hash) + 1, np.int64)
        np.add.at(cover, pos[repeat], 1)
        np.add.at(cover, pos[repeat] + n, -1)
        covered = np.cumsum(cover[:-1]) > 0
        dup = _per_doc_sum(words.doc[covered], words.length[covered], n_docs)
        out[f"dup_{n}gram"] = dup / denom
    return out


def compute_features(batch: pl.DataFrame, text: str, cfg: FilterConfig, words: WordArrays | None = None) -> pl.DataFrame:
    """One row of features per document of ``batch`` (same order)."""
    feats = batch.select(text_features(pl.col(text)))
    if cfg.gopher_repetition:
        frame = batch.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("i"), pl.col(text))
        base = pl.DataFrame({"i": np.arange(batch.height, dtype=np.int64)})
        for sep, name in (("\n", "line"), ("\n\n", "para")):
            base = base.join(_dup_fraction(frame, text, sep, name), on="i", how="left")
        feats = feats.hstack(base.sort("i").drop("i").fill_null(0.0))
        rep = repetition_features(words or WordArrays.from_texts(batch[text]), cfg, feats["n_chars"].to_numpy())
        feats = feats.with_columns([pl.Series(k, v) for k, v in rep.items()])
    return feats
