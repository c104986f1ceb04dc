"""Every data stage's run-config settings (fields, defaults from the ml/ stage configs, ranges,
rules across fields and stages); the training stages' are in ``ml/train/config.py``. The Dagster
config classes are derived from these models (``assets/config.py``). ``validate_profile`` checks a
whole profile and returns one ``field.path: problem`` line per error; it runs in every job's
ConfigMapping at launch and in ``lineage validate-config`` (README "Config checked before any step").
"""

from __future__ import annotations

import math
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ml.cleaned_chunks.chunking import ChunkConfig
from ml.cleaned_chunks.pipeline import CurationConfig
from ml.datasets.splits import DEFAULT_SEED, DEFAULT_TEST_RATIO, DEFAULT_VAL_RATIO
from ml.export.build import BundleConfig
from ml.export.parity import Thresholds as ParityThresholds
from ml.quality.suite import Thresholds
from ml.raw_docs import IngestConfig
from ml.tokenized_corpus import CorpusConfig
from ml.tokenizer import MIN_VOCAB, TokenizerConfig
from ml.relation_triples.base import DEFAULT_MIN_CONFIDENCE

SPLIT_STAGES = ("tokenizer", "tokenized_corpus", "embedding_dataset", "relation_dataset", "sft_dataset",
                "gnn_dataset", "ner_dataset", "preference_dataset")
PER_CHANNEL_MODES = ("auto", "on", "off")


class _Rules(BaseModel):
    model_config = ConfigDict(extra="allow")


def _ratio(v: Optional[float], name: str, lo_open: bool = False, hi_open: bool = False) -> Optional[float]:
    if v is None:
        return v
    if isinstance(v, float) and math.isnan(v):
        raise ValueError(f"{name} is NaN")
    lo_ok = v > 0 if lo_open else v >= 0
    hi_ok = v < 1 if hi_open else v <= 1
    if not (lo_ok and hi_ok):
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}0, 1{')' if hi_open else ']'}, got {v}")
    return v


class SplitRules(_Rules):
    """The document split every corpus/dataset stage shares (ml/datasets/splits.py): declared here once."""

    seed: int = Field(DEFAULT_SEED, ge=0, description="split seed: equal in every corpus and dataset stage, so a "
                      "document is in the same split everywhere")
    val_ratio: float = Field(DEFAULT_VAL_RATIO, description="share of documents in the val split")
    test_ratio: float = Field(DEFAULT_TEST_RATIO, description="share of documents in the held-out test split "
                              "(model_evaluation); never seen by training")
    mix_weights: dict[str, float] = Field({}, description="source (landing path or file stem) -> weight of the "
                                          "train split; empty: natural shares")

    @field_validator("val_ratio")
    @classmethod
    def _val(cls, v: float) -> float:  # 0 would leave every model without validation data
        return _ratio(v, "val_ratio", lo_open=True, hi_open=True)

    @field_validator("test_ratio")
    @classmethod
    def _test(cls, v: float) -> float:  # 0 is allowed: no test split, model_evaluation then reports nothing
        return _ratio(v, "test_ratio", hi_open=True)

    @model_validator(mode="after")
    def _held_out(self) -> "SplitRules":
        if self.val_ratio + self.test_ratio >= 1:
            raise ValueError(f"val_ratio + test_ratio ({self.val_ratio} + {self.test_ratio}) must be below 1: "
                             "the train split would be empty")
        return self

    @field_validator("mix_weights")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not (w >= 0 and math.isfinite(w))}
        if bad:
            raise ValueError(f"mix_weights must be finite and >= 0, got {bad}")
        if v and not any(w > 0 for w in v.values()):
            raise ValueError("mix_weights: every weight is 0, so the train split would be empty")
        return v


_INGEST = IngestConfig()


class RawDocsRules(_Rules):
    max_doc_bytes: int = Field(_INGEST.max_doc_bytes, ge=1)
    excerpt_chars: int = Field(_INGEST.excerpt_chars, ge=0)
    batch_rows: int = Field(_INGEST.batch_rows, ge=1)


_CURATION, _CHUNK, _TOKENIZER, _CORPUS = CurationConfig(), ChunkConfig(), TokenizerConfig(), CorpusConfig()
_THRESHOLDS = Thresholds()


class CleanedChunksRules(_Rules):
    jaccard_threshold: float = Field(_CURATION.jaccard_threshold, gt=0, le=1,
                                     description="near-duplicate Jaccard threshold, in (0, 1]")
    shingle_size: int = Field(_CURATION.shingle_size, ge=1)
    num_perm: int = Field(_CURATION.num_perm, ge=2)
    chunk_size: int = Field(_CHUNK.chunk_size, ge=1)
    overlap: int = Field(_CHUNK.overlap, ge=0)
    min_chunk_tokens: int = Field(_CHUNK.min_chunk_tokens, ge=0)
    batch_docs: int = Field(_CURATION.batch_docs, ge=1)

    @model_validator(mode="after")
    def _chunks(self) -> "CleanedChunksRules":
        if self.overlap >= self.chunk_size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than chunk_size ({self.chunk_size})")
        if self.min_chunk_tokens > self.chunk_size:
            raise ValueError(f"min_chunk_tokens ({self.min_chunk_tokens}) exceeds chunk_size ({self.chunk_size})")
        return self


class RelationTriplesRules(_Rules):
    parser: str = Field("simple", description="extractor backend: 'simple' (rules, always available) or another "
                        "registered one, e.g. 'spacy'")
    min_confidence: float = Field(DEFAULT_MIN_CONFIDENCE, ge=0, le=1, description="triples below this confidence "
                                  "are dropped (the per-chunk cache keeps them all)")
    batch_chunks: int = Field(50_000, ge=1, description="chunks per extraction batch and output part")

    @field_validator("parser")
    @classmethod
    def _parser(cls, v: str) -> str:
        from ml.relation_triples.registry import available

        if v not in available():
            raise ValueError(f"parser {v!r}: expected one of {tuple(available())}")
        return v


class TokenizerRules(SplitRules):
    vocab_size: int = Field(_TOKENIZER.vocab_size, ge=MIN_VOCAB, le=2**32 - 1,
                            description=f"target vocabulary size, at least {MIN_VOCAB}: 256 byte symbols + the "
                            "special tokens")
    min_frequency: int = Field(_TOKENIZER.min_frequency, ge=1,
                               description="a merge must occur at least this often in the training text")
    max_token_length: Optional[int] = Field(_TOKENIZER.max_token_length, ge=1,
                                            description="longest merged token in characters (null: unlimited)")
    model_max_length: int = Field(_TOKENIZER.model_max_length, ge=2,
                                  description="written to tokenizer_config.json: the longest input models take")


class TokenizedCorpusRules(SplitRules):
    shard_tokens: int = Field(_CORPUS.shard_tokens, ge=1, description="tokens per shard file")
    batch_docs: int = Field(_CORPUS.batch_docs, ge=1, description="documents per encode_batch call")


class DatasetRules(SplitRules):
    """Every *_dataset stage: the split, plus the ranges of the fields they share."""

    min_confidence: float = Field(0.0, ge=0, le=1)
    max_len: int = Field(256, ge=2)
    max_chars: int = Field(600, ge=1)
    min_chars: int = Field(0, ge=0)
    negatives: int = Field(7, ge=1)
    no_relation_ratio: float = Field(1.0, ge=0)
    title_pairs_per_doc: int = Field(1, ge=0)
    adjacent_pairs_per_doc: int = Field(2, ge=0)
    max_objects: int = Field(3, ge=1)
    max_chunk_chars: int = Field(512, ge=1)

    @model_validator(mode="after")
    def _chars(self) -> "DatasetRules":
        given = self.model_fields_set
        if {"min_chars", "max_chars"} <= given and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) exceeds max_chars ({self.max_chars})")
        if {"title_pairs_per_doc", "adjacent_pairs_per_doc"} <= given and \
                self.title_pairs_per_doc + self.adjacent_pairs_per_doc == 0:
            raise ValueError("title_pairs_per_doc and adjacent_pairs_per_doc are both 0: no pairs at all")
        return self


_PARITY, _BUNDLE = ParityThresholds(), BundleConfig()


class ParityRules(_Rules):
    fp32_max_abs_diff: float = Field(_PARITY.fp32_max_abs_diff, gt=0)
    int8_embedding_mean_cosine: float = Field(_PARITY.int8_embedding_mean_cosine, ge=-1, le=1)
    int8_embedding_min_cosine: float = Field(_PARITY.int8_embedding_min_cosine, ge=-1, le=1)
    int8_lm_top1_agreement: float = Field(_PARITY.int8_lm_top1_agreement, ge=0, le=1)
    int8_classifier_agreement: float = Field(_PARITY.int8_classifier_agreement, ge=0, le=1)
    int8_ranker_top1_agreement: float = Field(_PARITY.int8_ranker_top1_agreement, ge=0, le=1)
    int8_ranker_rank_correlation: float = Field(_PARITY.int8_ranker_rank_correlation, ge=-1, le=1)
    int8_token_agreement: float = Field(_PARITY.int8_token_agreement, ge=0, le=1)

    @model_validator(mode="after")
    def _cosines(self) -> "ParityRules":
        if self.int8_embedding_min_cosine > self.int8_embedding_mean_cosine:
            raise ValueError(f"int8_embedding_min_cosine ({self.int8_embedding_min_cosine}) exceeds "
                             f"int8_embedding_mean_cosine ({self.int8_embedding_mean_cosine})")
        return self


class OnnxBundleRules(_Rules):
    opset: int = Field(_BUNDLE.opset, ge=13, le=21)
    max_length: int = Field(_BUNDLE.max_length, ge=2)
    samples: int = Field(_BUNDLE.samples, ge=1)
    per_channel: str = _BUNDLE.per_channel
    quantize_embeddings: str = _BUNDLE.quantize_embeddings
    latency_runs: int = Field(_BUNDLE.latency_runs, ge=1)
    latency_seq: int = Field(_BUNDLE.latency_seq, ge=1)
    latency_batches: list[int] = list(_BUNDLE.latency_batches)
    threads: int = Field(_BUNDLE.threads, ge=0)
    thresholds: ParityRules = ParityRules()

    @field_validator("per_channel", "quantize_embeddings")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in PER_CHANNEL_MODES:
            raise ValueError(f"{v!r}: expected one of {PER_CHANNEL_MODES}")
        return v

    @field_validator("latency_batches")
    @classmethod
    def _batches(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError(f"latency_batches must all be >= 1, got {v}")
        return v


class QualityRules(_Rules):
    """The ``<asset>_quality`` check ops."""

    sample_rows: int = Field(_THRESHOLDS.sample_rows, ge=0,
                             description="failing rows kept per check in the metadata and in check_results.details")
    quarantine_rate_max: float = Field(_THRESHOLDS.quarantine_rate_max, ge=0, le=1,
                                       description="warning when quarantined lines / lines read exceeds this")
    duplicate_rate_max: float = Field(_THRESHOLDS.duplicate_rate_max, ge=0, le=1, description="warning when "
                                      "(exact + near duplicate documents) / documents in exceeds this")
    val_share_tolerance: float = Field(_THRESHOLDS.val_share_tolerance, ge=0, le=1,
                                       description="allowed |val documents / documents - val_ratio| ...")
    val_share_sigmas: float = Field(_THRESHOLDS.val_share_sigmas, ge=0, description="... or this many binomial "
                                    "standard errors, whichever is larger (small corpora)")
    max_label_share: float = Field(_THRESHOLDS.max_label_share, gt=0, le=1,
                                   description="warning when one label takes more than this share of the train split")


STAGES: dict[str, type[_Rules]] = {
    "raw_docs": RawDocsRules,
    "cleaned_chunks": CleanedChunksRules,
    "relation_triples": RelationTriplesRules,
    "tokenizer": TokenizerRules,
    "tokenized_corpus": TokenizedCorpusRules,
    **{name: DatasetRules for name in SPLIT_STAGES if name.endswith("_dataset")},
    "onnx_bundle": OnnxBundleRules,
}


def _is_type_error(e: dict) -> bool:
    return e["type"].endswith(("_type", "_parsing")) or e["type"] in ("missing", "extra_forbidden")


def format_error(exc: ValidationError, prefix: str, skip_type_errors: bool = False) -> list[str]:
    out = []
    for e in exc.errors():
        if skip_type_errors and _is_type_error(e):
            continue
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        shown = f" (got {value!r})" if not isinstance(value, dict) and e["type"] != "value_error" else ""
        out.append(f"{prefix}{'.' + loc if loc else ''}: {msg}{shown}")
    return out


def validate_profile(profile: Any, check_hardware: bool = False, skip_type_errors: bool = False) -> list[str]:
    """Every section of a run-config profile: one ``field.path: problem`` line per error ([] = valid).

    ``skip_type_errors``: leave wrong types, unknown and missing fields to the caller (Dagster's own
    config check reports those at launch, with its own message, right after the ConfigMapping)."""
    from ml.train.config import validate_run_config

    if not isinstance(profile, dict):
        return ["run config: expected a mapping with 'ops' and/or 'resources'"]
    ops = profile.get("ops") or {}
    if not isinstance(ops, dict):
        return ["ops: expected a mapping of op name -> {config: ...}"]
    errors: list[str] = []
    split: dict[str, tuple[Any, ...]] = {}
    for name, section in sorted(ops.items()):
        rules = STAGES.get(name) or (QualityRules if name.endswith("_quality") else None)
        if rules is None:
            continue  # training sections: ml/train/config.py below; unknown ops: Dagster says so
        cfg = (section or {}).get("config") if isinstance(section, dict) else None
        if cfg is None:
            continue
        if not isinstance(cfg, dict):
            errors.append(f"ops.{name}.config: expected a mapping")
            continue
        try:
            rules.model_validate(cfg)
        except ValidationError as exc:
            errors += format_error(exc, f"ops.{name}.config", skip_type_errors)
        if name in SPLIT_STAGES:
            split[name] = (cfg.get("seed"), cfg.get("val_ratio"), cfg.get("test_ratio"))
    for key, idx in (("seed", 0), ("val_ratio", 1), ("test_ratio", 2)):  # a document must be in the same split everywhere
        given = {name: v[idx] for name, v in split.items() if v[idx] is not None}
        if len(set(given.values())) > 1:
            first = sorted(given)[0]
            for name in sorted(given):
                if given[name] != given[first]:
                    errors.append(f"ops.{name}.config.{key}: {given[name]!r} differs from ops.{first}.config.{key} "
                                  f"({given[first]!r}); every corpus and dataset stage must split documents alike")
    if skip_type_errors:  # the strict training models, with type errors left out the same way
        from ml.train.config import SETTINGS

        for name, cls in SETTINGS.items():
            cfg = ((ops.get(name) or {}).get("config") if isinstance(ops.get(name), dict) else None) or {}
            try:
                cls.model_validate(cfg)
            except ValidationError as exc:
                errors += format_error(exc, f"ops.{name}.config", True)
            except Exception as exc:  # a cross-field rule that could not even run on these types
                errors.append(f"ops.{name}.config: {exc}")
        return errors
    train_errors, _notes = validate_run_config(profile, check_hardware=check_hardware)
    return errors + train_errors
