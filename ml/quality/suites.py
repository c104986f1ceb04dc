"""Expectation suites: what each data asset's version must satisfy, as GX expectations.

A suite turns one stored version into a few small polars frames and one ``Expectation`` per
check (``ml/quality/engine.py`` runs them). Its list of ``CheckDef`` is static, so Dagster can
show every check beside its asset before anything ran (``assets/checks.py``).

Frames hold the columns GX validates. Where an expectation needs more than one column or more
than one table (an evidence span inside its chunk, a chunk's doc_id in the upstream raw_docs, a
document in both splits), polars computes a per-row boolean or number and GX validates that
column; arrays (token shards) are summarised per shard (max id, token count) into a frame. The
upstream a cross-asset expectation reads is the version recorded in the checked version's
manifest (``manifest["upstream"]``), never "the newest". Bounds that are part of how a version
was built (chunk_size, min_confidence, val_ratio) come from that version's manifest ``config``;
ceilings and tolerances from ``Thresholds``.

Missing values never slip through: GX skips nulls in most column expectations, so a derived
column maps a missing value to one that fails (a null content has 0 characters, a null
confidence reads -1, a null relation reads "").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import polars as pl

from ml.cleaned_chunks.chunking import CHUNK_SCHEMA
from ml.cleaned_chunks.pipeline import DECISION_SCHEMA
from ml.quality.engine import Expectation
from ml.raw_docs import DOC_SCHEMA, QUARANTINE_SCHEMA
from ml.relation_triples.base import RELATIONS
from ml.relation_triples.extract import TRIPLE_SCHEMA
from ml.store import ArtifactStore, StoredVersion
from ml.tokenized_corpus import DTYPES, INDEX

EXCERPT = 80  # characters of a text shown in failing-row samples


@dataclass(frozen=True)
class Thresholds:
    """Ceilings and tolerances of the suites (the Dagster checks expose them as run config)."""

    quarantine_rate_max: float = 0.05
    """raw_docs (warning): quarantined lines / lines read."""
    duplicate_rate_max: float = 0.3
    """cleaned_chunks (warning): exact + near duplicate documents / documents in."""
    val_share_tolerance: float = 0.02
    """tokenized_corpus: |val docs / docs - val_ratio| allowed at any corpus size ..."""
    val_share_sigmas: float = 4.0
    """... widened to this many binomial standard errors sqrt(r(1-r)/docs) on small corpora."""
    max_label_share: float = 0.8
    """relation_dataset (warning): the largest share one label may take of the train split."""
    sample_rows: int = 5
    """Failing rows kept per check (metadata and check_results.details)."""

    def __post_init__(self) -> None:
        for name in ("quarantine_rate_max", "duplicate_rate_max", "max_label_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if self.val_share_tolerance < 0 or self.val_share_sigmas < 0:
            raise ValueError("val_share_tolerance and val_share_sigmas must be >= 0")
        if self.sample_rows < 0:
            raise ValueError(f"sample_rows must be >= 0, got {self.sample_rows}")


@dataclass(frozen=True)
class CheckDef:
    name: str
    blocking: bool
    description: str

    @property
    def severity(self) -> str:
        return "ERROR" if self.blocking else "WARN"


@dataclass
class Prepared:
    """A version turned into what GX validates."""

    frames: dict[str, pl.DataFrame]
    expectations: list[Expectation]
    errors: dict[str, str] = field(default_factory=dict)
    """check name -> why its frame could not be built (reported failed, not run)."""
    inputs: dict[str, str] = field(default_factory=dict)
    """upstream asset -> version the suite read."""


@dataclass(frozen=True)
class Suite:
    asset: str
    checks: tuple[CheckDef, ...]
    prepare: Callable[[ArtifactStore, StoredVersion, Thresholds], Prepared]


def _exp(check: str, frame: str, type_: str, sample: tuple[str, ...] = (), notes: Mapping | None = None,
         **kwargs) -> Expectation:
    # severity is filled in from the suite's CheckDef by ml/quality/validate.py
    return Expectation(check, frame, type_, kwargs, sample_columns=sample, notes=dict(notes or {}))


# ---- reading helpers -------------------------------------------------------------------------
def _parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def _scan(files: list[Path], columns: list[str], schema: Mapping[str, pl.DataType]) -> pl.LazyFrame:
    """The wanted columns of several parts (a column missing from a part reads as null there;
    a column missing from every part is absent). No parts: an empty frame with ``schema``."""
    frames = []
    for f in files:
        have = pl.read_parquet_schema(f)
        cols = [c for c in columns if c in have]
        # a part with none of the columns still contributes its rows (all null)
        frames.append(pl.scan_parquet(f).select(cols or [pl.nth(0).is_null().alias("_row")]))
    if not frames:
        return pl.LazyFrame(schema={c: schema[c] for c in columns if c in schema})
    return pl.concat(frames, how="diagonal_relaxed").drop("_row", strict=False)


def _names(lf: pl.LazyFrame) -> list[str]:
    return lf.collect_schema().names()


def _schema_frame(tables: Mapping[str, tuple[Mapping[str, pl.DataType], list[Path]]]) -> pl.DataFrame:
    """One row per (table, part, column) with the expected and actual dtype (null when missing
    or unexpected), for ``expect_column_pair_values_to_be_equal(expected, actual)``."""
    rows = []
    for table, (schema, files) in tables.items():
        if not files:
            rows += [{"table": table, "part": None, "column": c, "expected": str(t), "actual": None}
                     for c, t in schema.items()]
            continue
        for f in files:
            actual = dict(pl.read_parquet_schema(f))
            for c in dict.fromkeys([*schema, *actual]):
                rows.append({
                    "table": table, "part": f.name, "column": c,
                    "expected": str(schema[c]) if c in schema else None,
                    "actual": str(actual[c]) if c in actual else None,
                })
    return pl.DataFrame(rows, schema={"table": pl.String, "part": pl.String, "column": pl.String,
                                      "expected": pl.String, "actual": pl.String})


def _schema_exp(notes: Mapping | None = None) -> Expectation:
    return _exp("columns_and_types", "schema", "expect_column_pair_values_to_be_equal",
                ("table", "part", "column", "expected", "actual"), notes,
                column_A="expected", column_B="actual")


def _upstream(store: ArtifactStore, v: StoredVersion, asset: str) -> tuple[StoredVersion | None, str | None]:
    """The upstream version recorded in v's manifest, or why it cannot be read."""
    up = (v.manifest.get("upstream") or {}).get(asset)
    if not up:
        return None, f"{v.asset}@{v.data_version}'s manifest records no upstream {asset} version"
    if not store.has_version(asset, up):
        return None, f"upstream {asset}@{up} (recorded in {v.asset}@{v.data_version}'s manifest) is not in the store"
    return store.open(asset, up), None  # verified against its manifest (CorruptVersionError)


def _config(v: StoredVersion, key: str) -> tuple[Any, str | None]:
    cfg = v.manifest.get("config") or {}
    if cfg.get(key) is None:
        return None, f"{v.asset}@{v.data_version}'s manifest config has no {key!r}"
    return cfg[key], None


def _chars(col: str) -> pl.Expr:
    """Characters after stripping whitespace; a null counts as empty (0)."""
    return pl.col(col).str.strip_chars().str.len_chars().fill_null(0).cast(pl.Int64)


def _excerpt(col: str) -> pl.Expr:
    return pl.col(col).str.slice(0, EXCERPT).alias(f"{col}_excerpt")


# ---- raw_docs --------------------------------------------------------------------------------
RAW_DOCS_CHECKS = (
    CheckDef("columns_and_types", True, "docs and quarantine parts have exactly the documented columns "
             "and dtypes (ml/FORMATS.md)"),
    CheckDef("doc_id_unique", True, "no doc_id appears twice"),
    CheckDef("content_non_empty", True, "every document has content with a non-whitespace character"),
    CheckDef("quarantine_rate", False, "quarantined lines / lines read stays under quarantine_rate_max"),
)


def _raw_docs(store: ArtifactStore, v: StoredVersion, t: Thresholds) -> Prepared:
    docs_files, q_files = _parts(v.path / "docs"), _parts(v.path / "quarantine")
    schema = _schema_frame({"docs": (DOC_SCHEMA, docs_files), "quarantine": (QUARANTINE_SCHEMA, q_files)})
    lf = _scan(docs_files, ["doc_id", "title", "source", "line", "content"], DOC_SCHEMA)
    have = _names(lf)
    derived = [_chars("content").alias("content_chars"), _excerpt("content")] if "content" in have else []
    docs = lf.select([c for c in ("doc_id", "title", "source", "line") if c in have] + derived).collect()
    quarantined = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in q_files)
    lines = docs.height + quarantined
    summary = pl.DataFrame({"docs": [docs.height], "quarantined": [quarantined], "lines_read": [lines],
                            "quarantine_rate": [quarantined / lines if lines else 0.0]})
    sample = ("doc_id", "title", "source", "line")
    return Prepared(
        frames={"schema": schema, "docs": docs, "summary": summary},
        expectations=[
            _schema_exp(),
            _exp("doc_id_unique", "docs", "expect_column_values_to_be_unique", sample, column="doc_id"),
            _exp("content_non_empty", "docs", "expect_column_values_to_be_between", (*sample, "content_excerpt"),
                 column="content_chars", min_value=1),
            _exp("quarantine_rate", "summary", "expect_column_values_to_be_between",
                 ("docs", "quarantined", "lines_read", "quarantine_rate"),
                 column="quarantine_rate", min_value=0.0, max_value=t.quarantine_rate_max),
        ],
    )


# ---- cleaned_chunks --------------------------------------------------------------------------
CLEANED_CHUNKS_CHECKS = (
    CheckDef("columns_and_types", True, "chunk parts have exactly the documented columns and dtypes"),
    CheckDef("chunk_id_unique", True, "no chunk_id appears twice"),
    CheckDef("text_not_null", True, "every chunk has text"),
    CheckDef("chunk_length_in_bounds", True, "every chunk has 1..chunk_size tokens (chunk_size from the "
             "version's config)"),
    CheckDef("doc_id_in_raw_docs", True, "every chunk's doc_id is a document of the raw_docs version it "
             "was built from"),
    CheckDef("duplicate_rate", False, "exact + near duplicate documents / documents in stays under "
             "duplicate_rate_max"),
)


def _cleaned_chunks(store: ArtifactStore, v: StoredVersion, t: Thresholds) -> Prepared:
    errors: dict[str, str] = {}
    inputs: dict[str, str] = {}
    files = _parts(v.path / "chunks")
    schema = _schema_frame({"chunks": (CHUNK_SCHEMA, files)})
    lf = _scan(files, ["chunk_id", "doc_id", "chunk_index", "n_tokens", "text"], CHUNK_SCHEMA)
    have = _names(lf)
    exprs: list[pl.Expr] = [pl.col(c) for c in ("chunk_id", "doc_id", "chunk_index") if c in have]
    if "n_tokens" in have:  # a missing count reads as -1: out of bounds
        exprs.append(pl.col("n_tokens").cast(pl.Int64).fill_null(-1))
    if "text" in have:  # null exactly where text is null; the text itself never goes to pandas
        exprs += [pl.col("text").str.len_chars().cast(pl.Int64).alias("text_chars"), _excerpt("text")]
    raw, why = _upstream(store, v, "raw_docs")
    if raw is not None and "doc_id" in have:
        inputs["raw_docs"] = raw.data_version
        raw_ids = _scan(_parts(raw.path / "docs"), ["doc_id"], {"doc_id": pl.String}).collect()
        if "doc_id" in raw_ids.columns:
            exprs.append(pl.col("doc_id").is_in(raw_ids["doc_id"].drop_nulls().implode())
                         .fill_null(False).alias("doc_id_in_raw_docs"))
        else:
            errors["doc_id_in_raw_docs"] = f"raw_docs@{raw.data_version} has no doc_id column"
    elif why:
        errors["doc_id_in_raw_docs"] = why
    chunks = lf.select(exprs).collect()

    chunk_size, why = _config(v, "chunk_size")
    if why:
        errors["chunk_length_in_bounds"] = why
    d = _scan(_parts(v.path / "decisions"), ["decision"], DECISION_SCHEMA).collect()
    docs_in = d.height
    dups = int(d["decision"].is_in(["exact_duplicate", "near_duplicate"]).sum()) if "decision" in d.columns else 0
    summary = pl.DataFrame({"docs_in": [docs_in], "duplicates": [dups],
                            "duplicate_rate": [dups / docs_in if docs_in else 0.0]})
    sample = ("chunk_id", "doc_id", "chunk_index")
    return Prepared(
        frames={"schema": schema, "chunks": chunks, "summary": summary},
        expectations=[
            _schema_exp(),
            _exp("chunk_id_unique", "chunks", "expect_column_values_to_be_unique", sample, column="chunk_id"),
            _exp("text_not_null", "chunks", "expect_column_values_to_not_be_null", sample, column="text_chars",
                 notes={"column": "text_chars = characters of text, null exactly where text is null"}),
            _exp("chunk_length_in_bounds", "chunks", "expect_column_values_to_be_between",
                 (*sample, "n_tokens", "text_excerpt"), column="n_tokens", min_value=1,
                 **({"max_value": int(chunk_size)} if chunk_size is not None else {})),
            _exp("doc_id_in_raw_docs", "chunks", "expect_column_values_to_be_in_set", sample,
                 {"raw_docs": inputs.get("raw_docs")}, column="doc_id_in_raw_docs", value_set=[True]),
            _exp("duplicate_rate", "summary", "expect_column_values_to_be_between",
                 ("docs_in", "duplicates", "duplicate_rate"),
                 column="duplicate_rate", min_value=0.0, max_value=t.duplicate_rate_max),
        ],
        errors=errors, inputs=inputs,
    )


# ---- relation_triples ------------------------------------------------------------------------
RELATION_TRIPLES_CHECKS = (
    CheckDef("columns_and_types", True, "triple parts have exactly the documented columns and dtypes"),
    CheckDef("confidence_in_range", True, "every confidence lies in [min_confidence, 1] (min_confidence "
             "from the version's config)"),
    CheckDef("subject_non_empty", True, "every subject has a non-whitespace character"),
    CheckDef("object_non_empty", True, "every object has a non-whitespace character"),
    CheckDef("relation_in_label_set", True, "every relation is one of the documented labels (RELATIONS)"),
    CheckDef("evidence_in_chunk", True, "every evidence span lies inside the text of its chunk (of the "
             "cleaned_chunks version it was built from) and equals that text slice"),
)


def _relation_triples(store: ArtifactStore, v: StoredVersion, t: Thresholds) -> Prepared:
    errors: dict[str, str] = {}
    inputs: dict[str, str] = {}
    files = _parts(v.path / "triples")
    schema = _schema_frame({"triples": (TRIPLE_SCHEMA, files)})
    lf = _scan(files, list(TRIPLE_SCHEMA), TRIPLE_SCHEMA)
    have = _names(lf)
    exprs: list[pl.Expr] = [pl.col(c) for c in ("chunk_id", "subject", "relation", "object", "confidence",
                                                "evidence_start", "evidence_end") if c in have]
    if "confidence" in have:
        exprs.append(pl.col("confidence").cast(pl.Float64).fill_nan(None).fill_null(-1.0).alias("confidence_checked"))
    for c in ("subject", "object"):
        if c in have:
            exprs.append(_chars(c).alias(f"{c}_chars"))
    if "relation" in have:
        exprs.append(pl.col("relation").fill_null("").alias("relation_checked"))
    if "evidence" in have:
        exprs.append(_excerpt("evidence"))
    triples = lf.select(exprs).collect()

    chunks_v, why = _upstream(store, v, "cleaned_chunks")
    span_cols = {"chunk_id", "evidence_start", "evidence_end", "evidence"}
    if chunks_v is None:
        errors["evidence_in_chunk"] = why or "no upstream cleaned_chunks"
    elif not span_cols <= set(have):
        errors["evidence_in_chunk"] = f"triples lack {sorted(span_cols - set(have))}"
    else:
        inputs["cleaned_chunks"] = chunks_v.data_version
        chunks = _scan(_parts(chunks_v.path / "chunks"), ["chunk_id", "text"], {"chunk_id": pl.String, "text": pl.String})
        s, e = pl.col("evidence_start"), pl.col("evidence_end")
        inside = (lf.select("chunk_id", "evidence_start", "evidence_end", "evidence")
                  .join(chunks.unique("chunk_id"), on="chunk_id", how="left", maintain_order="left")
                  .select(
                      pl.col("text").str.len_chars().cast(pl.Int64).alias("chunk_chars"),
                      ((s >= 0) & (s <= e) & (e <= pl.col("text").str.len_chars())
                       & (pl.col("text").str.slice(s, e - s) == pl.col("evidence")))
                      .fill_null(False).alias("evidence_in_chunk"))
                  .collect())
        triples = triples.hstack(inside)

    min_conf, why = _config(v, "min_confidence")
    if why:
        errors["confidence_in_range"] = why
    sample = ("chunk_id", "subject", "relation", "object")
    return Prepared(
        frames={"schema": schema, "triples": triples},
        expectations=[
            _schema_exp(),
            _exp("confidence_in_range", "triples", "expect_column_values_to_be_between", (*sample, "confidence"),
                 {"column": "confidence_checked = confidence, a missing one read as -1"},
                 column="confidence_checked", min_value=float(min_conf if min_conf is not None else 0.0),
                 max_value=1.0),
            _exp("subject_non_empty", "triples", "expect_column_values_to_be_between", sample,
                 column="subject_chars", min_value=1),
            _exp("object_non_empty", "triples", "expect_column_values_to_be_between", sample,
                 column="object_chars", min_value=1),
            _exp("relation_in_label_set", "triples", "expect_column_values_to_be_in_set", sample,
                 column="relation_checked", value_set=sorted(RELATIONS)),
            _exp("evidence_in_chunk", "triples", "expect_column_values_to_be_in_set",
                 ("chunk_id", "evidence_start", "evidence_end", "chunk_chars", "evidence_excerpt"),
                 {"cleaned_chunks": inputs.get("cleaned_chunks")},
                 column="evidence_in_chunk", value_set=[True]),
        ],
        errors=errors, inputs=inputs,
    )


# ---- tokenized_corpus ------------------------------------------------------------------------
TOKENIZED_CORPUS_CHECKS = (
    CheckDef("token_ids_below_vocab", True, "every token id is below the tokenizer's vocabulary size "
             "(max id per shard)"),
    CheckDef("no_empty_shard", True, "every shard file holds at least one token (and the train split has one)"),
    CheckDef("val_share_within_tolerance", True, "val documents / documents is within tolerance of the "
             "version's val_ratio (widened by binomial standard errors on small corpora)"),
)


def _tokenized_corpus(store: ArtifactStore, v: StoredVersion, t: Thresholds) -> Prepared:
    errors: dict[str, str] = {}
    inputs: dict[str, str] = {}
    shard_rows: list[dict] = []
    split_docs = {"train": 0, "val": 0}
    index: dict = {}
    try:
        index = json.loads((v.path / INDEX).read_text("utf-8"))
        dtype = DTYPES[index["dtype"]]
    except (OSError, ValueError, KeyError) as exc:
        why = f"{v.asset}@{v.data_version}: unreadable index.json ({type(exc).__name__}: {exc})"
        errors = {c.name: why for c in TOKENIZED_CORPUS_CHECKS}
        dtype = None
    if dtype is not None:
        for split, info in sorted((index.get("splits") or {}).items()):
            split_docs[split] = int(info.get("docs") or 0)
            for shard in info.get("shards") or []:
                path = v.path / shard["path"]
                row = {"split": split, "path": shard["path"], "declared_tokens": int(shard.get("tokens") or 0),
                       "tokens": 0, "max_id": -1}
                if path.is_file():
                    ids = np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size >= dtype.itemsize else None
                    if ids is not None and ids.size:
                        row["tokens"], row["max_id"] = int(ids.size), int(ids.max())
                shard_rows.append(row)
        if not any(r["split"] == "train" for r in shard_rows):  # no training tokens at all
            shard_rows.append({"split": "train", "path": "train/ (no shard)", "declared_tokens": 0,
                               "tokens": 0, "max_id": -1})
    shards = pl.DataFrame(shard_rows, schema={"split": pl.String, "path": pl.String, "declared_tokens": pl.Int64,
                                              "tokens": pl.Int64, "max_id": pl.Int64})
    # the vocabulary size ids must stay below: the upstream tokenizer's, else index.json's
    tok, _ = _upstream(store, v, "tokenizer")
    vocab: int | None = None
    vocab_source = ""
    if tok is not None and (tok.path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(tok.path / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
        vocab_source = f"tokenizer@{tok.data_version}"
        inputs["tokenizer"] = tok.data_version
    elif isinstance(index.get("vocab_size"), int):
        vocab, vocab_source = int(index["vocab_size"]), "index.json"
    else:
        errors.setdefault("token_ids_below_vocab",
                          "no tokenizer version in the manifest and no vocab_size in index.json")

    ratio, why = _config(v, "val_ratio")
    if why and "val_share_within_tolerance" not in errors:
        errors["val_share_within_tolerance"] = why
    r = float(ratio or 0.0)
    # train documents the source mix left out were split too: they count in the denominator
    n = split_docs["train"] + split_docs["val"] + split_docs.get("test", 0) + int(index.get("mixed_out_docs") or 0)
    share = split_docs["val"] / n if n else 0.0
    allowed = max(t.val_share_tolerance, t.val_share_sigmas * math.sqrt(r * (1 - r) / n) if n else math.inf)
    allowed = min(allowed, 1.0)
    splits = pl.DataFrame({"train_docs": [split_docs["train"]], "val_docs": [split_docs["val"]],
                           "val_share": [share], "val_ratio": [r], "allowed_deviation": [allowed]})
    return Prepared(
        frames={"shards": shards, "splits": splits},
        expectations=[
            _exp("token_ids_below_vocab", "shards", "expect_column_values_to_be_between",
                 ("split", "path", "tokens", "max_id"), {"vocab_size": vocab, "vocab_from": vocab_source},
                 column="max_id", max_value=(vocab - 1) if vocab is not None else None),
            _exp("no_empty_shard", "shards", "expect_column_values_to_be_between",
                 ("split", "path", "declared_tokens", "tokens"), column="tokens", min_value=1),
            _exp("val_share_within_tolerance", "splits", "expect_column_values_to_be_between",
                 ("train_docs", "val_docs", "val_share", "val_ratio", "allowed_deviation"),
                 column="val_share", min_value=max(0.0, r - allowed), max_value=min(1.0, r + allowed)),
        ],
        errors=errors, inputs=inputs,
    )


# ---- datasets --------------------------------------------------------------------------------
DATASET_ITEM_KEYS = {
    # the texts that make an item: one of them seen in both splits is a leak (the builders in
    # ml/datasets/ drop such val rows: embedding bans every train anchor/positive text from val)
    "embedding_dataset": ("anchor", "positive"),
    "relation_dataset": ("text",),
    "sft_dataset": ("prompt",),
    "gnn_dataset": ("query",),
    "ner_dataset": ("text",),
    "preference_dataset": ("prompt",),
}
# list columns whose documents count as the row's documents too (gnn: every candidate chunk's document)
DATASET_EXTRA_DOCS = {"gnn_dataset": "candidate_doc_ids"}


def _dataset_checks(asset: str) -> tuple[CheckDef, ...]:
    keys = " or ".join(DATASET_ITEM_KEYS[asset])
    checks = [
        CheckDef("no_doc_in_both_splits", True, "no document (doc_id) has rows in two of train, val and test"
                 + (" (every candidate chunk's document counts)" if asset in DATASET_EXTRA_DOCS else "")),
        CheckDef("no_item_in_both_splits", True, f"no item text ({keys}) appears in two of train, val and test"),
        CheckDef("train_split_non_empty", True, "the train split has at least one row (a model cannot "
                 "train on nothing)"),
    ]
    if asset == "relation_dataset":
        checks.append(CheckDef("class_balance", False, "no label takes more than max_label_share of the "
                               "train split"))
    return tuple(checks)


def _dataset(asset: str) -> Callable[[ArtifactStore, StoredVersion, Thresholds], Prepared]:
    keys = list(DATASET_ITEM_KEYS[asset])

    def prepare(store: ArtifactStore, v: StoredVersion, t: Thresholds) -> Prepared:
        errors: dict[str, str] = {}
        parts = []
        for split in ("train", "val", "test"):
            f = v.path / f"{split}.parquet"
            if split == "test" and not f.is_file():
                continue  # a version made before test splits existed: train and val are still checked
            if not f.is_file():
                errors.update({c.name: f"{asset}@{v.data_version} has no {split}.parquet"
                               for c in _dataset_checks(asset)})
                continue
            have = pl.read_parquet_schema(f)
            missing = [c for c in ["doc_id", *keys] if c not in have]
            if missing:
                why = f"{asset}@{v.data_version}: {split}.parquet lacks {missing}"
                errors.setdefault("no_doc_in_both_splits" if "doc_id" in missing else "no_item_in_both_splits", why)
                if "doc_id" in missing and len(missing) > 1:
                    errors.setdefault("no_item_in_both_splits", why)
            cols = [c for c in ["doc_id", *keys, "label"] if c in have]
            part = pl.scan_parquet(f).select(cols).with_columns(split=pl.lit(split))
            extra = DATASET_EXTRA_DOCS.get(asset)
            if extra and extra in have:  # one more row per candidate document (item keys blanked)
                docs = (pl.scan_parquet(f).select(pl.col(extra).alias("doc_id")).explode("doc_id")
                        .with_columns(split=pl.lit(split), **{k: pl.lit(None, pl.String) for k in keys}))
                part = pl.concat([part, docs], how="diagonal_relaxed")
            elif extra:
                errors.setdefault("no_doc_in_both_splits", f"{asset}@{v.data_version}: {split}.parquet lacks {extra}")
            parts.append(part)
        rows = pl.concat(parts, how="diagonal_relaxed").collect() if parts else pl.DataFrame(
            schema={"doc_id": pl.String, "split": pl.String})
        exprs: list[pl.Expr] = []
        if "doc_id" in rows.columns:
            exprs.append((pl.col("split").n_unique().over("doc_id") > 1).alias("doc_in_both_splits"))
        if all(k in rows.columns for k in keys):
            texts = (rows.select(*keys, "split", row=pl.int_range(pl.len()))
                     .unpivot(on=keys, index=["row", "split"], value_name="item").drop_nulls("item"))
            leaked = texts.filter(pl.col("split").n_unique().over("item") > 1)["row"].unique()
            exprs.append(pl.int_range(pl.len()).is_in(leaked.implode()).alias("item_in_both_splits"))
            exprs += [_excerpt(k) for k in keys]
        rows = rows.with_columns(exprs)
        sample = ("doc_id", "split", *(f"{k}_excerpt" for k in keys))
        sizes = pl.DataFrame({"split": ["train", "val"],
                              "rows": [int((rows["split"] == sp).sum()) for sp in ("train", "val")]})
        frames = {"rows": rows, "train_rows": sizes.filter(pl.col("split") == "train")}
        expectations = [
            _exp("train_split_non_empty", "train_rows", "expect_column_values_to_be_between", ("split", "rows"),
                 column="rows", min_value=1),
            _exp("no_doc_in_both_splits", "rows", "expect_column_values_to_be_in_set", sample,
                 column="doc_in_both_splits", value_set=[False]),
            _exp("no_item_in_both_splits", "rows", "expect_column_values_to_be_in_set", sample,
                 column="item_in_both_splits", value_set=[False]),
        ]
        if asset == "relation_dataset":
            train = rows.filter(pl.col("split") == "train")
            if "label" in train.columns:
                labels = (train.group_by("label").len("rows").sort("rows", descending=True)
                          .with_columns(share=pl.col("rows") / max(train.height, 1)))
            else:
                labels = pl.DataFrame(schema={"label": pl.String, "rows": pl.UInt32, "share": pl.Float64})
                errors.setdefault("class_balance", "relation_dataset has no label column")
            frames["labels"] = labels
            expectations.append(_exp("class_balance", "labels", "expect_column_values_to_be_between",
                                     ("label", "rows", "share"), column="share", max_value=t.max_label_share))
        return Prepared(frames=frames, expectations=expectations, errors=errors)

    return prepare


# ---- registry --------------------------------------------------------------------------------
SUITES: dict[str, Suite] = {
    "raw_docs": Suite("raw_docs", RAW_DOCS_CHECKS, _raw_docs),
    "cleaned_chunks": Suite("cleaned_chunks", CLEANED_CHUNKS_CHECKS, _cleaned_chunks),
    "relation_triples": Suite("relation_triples", RELATION_TRIPLES_CHECKS, _relation_triples),
    "tokenized_corpus": Suite("tokenized_corpus", TOKENIZED_CORPUS_CHECKS, _tokenized_corpus),
    **{a: Suite(a, _dataset_checks(a), _dataset(a)) for a in DATASET_ITEM_KEYS},
}
