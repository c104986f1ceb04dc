"""Asset versions for the quality-suite tests, built in a temporary store: a clean version of every
asset (``Versions``), and ``MUTATIONS`` / ``WARNINGS`` that make a version break one expectation."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from ml.cleaned_chunks.chunking import CHUNK_SCHEMA
from ml.cleaned_chunks.pipeline import DECISION_SCHEMA
from ml.raw_docs import DOC_SCHEMA, QUARANTINE_SCHEMA
from ml.relation_triples.extract import TRIPLE_SCHEMA
from ml.store import ArtifactStore, BuildResult, StoredVersion

Files = dict[str, Any]  # relative path -> polars frame (parquet), bytes, or dict (json)

TEXTS = [
    "Python is a programming language. It was created by Guido van Rossum.",
    "The parser returns a syntax tree. Trees are walked by visitors.",
    "The archive contains compressed files. Each file has a header.",
    "Too short.",
]
QUARANTINE_EMPTY = pl.DataFrame(schema=QUARANTINE_SCHEMA)


def put_version(store: ArtifactStore, asset: str, files: Files, *, config: dict | None = None,
                upstream: dict | None = None) -> StoredVersion:
    """Publish ``files`` as a new version of ``asset``: a nonce file makes its content (so its data
    version) unique, so the manifest's config and upstream are the ones given here."""
    def build(out: Path) -> BuildResult:
        (out / "nonce").write_text(secrets.token_hex(8))
        for rel, obj in files.items():
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(obj, pl.DataFrame):
                obj.write_parquet(path)
            elif isinstance(obj, bytes):
                path.write_bytes(obj)
            else:
                path.write_text(json.dumps(obj))
        return BuildResult()

    return store.put(asset, build, fingerprint=secrets.token_hex(8), code_version="test",
                     config=config or {}, upstream=upstream or {})


# ---- clean versions ------------------------------------------------------------------------
def raw_docs_files() -> Files:
    docs = pl.DataFrame({
        "doc_id": [f"d{i}" for i in range(len(TEXTS))], "title": [f"doc {i}" for i in range(len(TEXTS))],
        "content": TEXTS, "url": [f"https://example.org/{i}" for i in range(len(TEXTS))],
        "source": ["a.jsonl"] * len(TEXTS), "line": list(range(1, len(TEXTS) + 1)), "meta": [None] * len(TEXTS),
    }, schema=DOC_SCHEMA)
    return {"docs/part-00000.parquet": docs, "quarantine/part-00000.parquet": QUARANTINE_EMPTY}


def chunk_rows(raw: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for doc_id, text in zip(raw["doc_id"], raw["content"]):
        if text == TEXTS[-1]:
            continue  # filtered
        a, b = 0, text.index(". ") + 1
        for k, (s, e) in enumerate([(a, b), (b + 1, len(text))]):
            rows.append({"chunk_id": f"{doc_id}c{k}", "doc_id": doc_id, "chunk_index": k, "char_start": s,
                         "char_end": e, "n_tokens": len(text[s:e].split()), "text": text[s:e]})
    return pl.DataFrame(rows, schema=CHUNK_SCHEMA)


def cleaned_chunks_files(raw: StoredVersion) -> Files:
    docs = pl.read_parquet(raw.path / "docs" / "*.parquet")
    decisions = pl.DataFrame({
        "doc_id": docs["doc_id"], "decision": ["kept"] * (docs.height - 1) + ["filtered"],
        "reason": [None] * (docs.height - 1) + ["gopher_min_words"], "duplicate_of": [None] * docs.height,
        "similarity": [None] * docs.height,
    }, schema=DECISION_SCHEMA)
    return {"chunks/part-00000.parquet": chunk_rows(docs), "decisions/part-00000.parquet": decisions}


def relation_triples_files(chunks: StoredVersion) -> Files:
    c = pl.read_parquet(chunks.path / "chunks" / "*.parquet")
    rows = []
    for chunk_id, text in zip(c["chunk_id"], c["text"]):
        words = text.rstrip(".").split()
        rows.append({"chunk_id": chunk_id, "subject": words[0], "relation": "is_a", "object": words[-1],
                     "confidence": 0.9, "evidence_start": 0, "evidence_end": len(text), "evidence": text,
                     "extractor": "simple@1"})
    return {"triples/part-00000.parquet": pl.DataFrame(rows, schema=TRIPLE_SCHEMA)}


VOCAB = 300


def _corpus(train_docs: int, val_docs: int, shards: dict[str, list[np.ndarray]]) -> Files:
    files: Files = {}
    index: dict[str, Any] = {"dtype": "uint16", "vocab_size": VOCAB, "eos_id": 3, "shard_tokens": 64, "splits": {}}
    for split, arrays in shards.items():
        entries = []
        for i, arr in enumerate(arrays):
            rel = f"{split}/shard-{i:05d}.bin"
            files[rel] = arr.astype("<u2").tobytes()
            entries.append({"path": rel, "tokens": int(arr.size)})
        docs = train_docs if split == "train" else val_docs
        index["splits"][split] = {"shards": entries, "docs": docs, "tokens": int(sum(a.size for a in arrays))}
    files["index.json"] = index
    return files


def tokenized_corpus_files() -> Files:
    rng = np.random.default_rng(0)
    return _corpus(95, 5, {"train": [rng.integers(0, VOCAB, 64), rng.integers(0, VOCAB, 10)],
                           "val": [rng.integers(0, VOCAB, 12)]})


def dataset_files(asset: str) -> Files:
    def rows(split: str, n: int, offset: int) -> pl.DataFrame:
        ids = [f"{split}{i}" for i in range(n)]
        base = {"doc_id": ids, "source": ["a.jsonl"] * n}
        if asset == "embedding_dataset":
            return pl.DataFrame({"anchor": [f"title {d}" for d in ids], "positive": [f"chunk of {d}" for d in ids],
                                 "kind": ["title_chunk"] * n, **base})
        if asset == "relation_dataset":
            labels = ["is_a", "part_of", "no_relation", "uses"]
            return pl.DataFrame({"text": [f"<e1>X{d}</e1> relates to <e2>Y{d}</e2>" for d in ids],
                                 "label": [labels[(i + offset) % len(labels)] for i in range(n)],
                                 "chunk_id": [f"c{d}" for d in ids], **base})
        if asset == "gnn_dataset":
            return pl.DataFrame({"query": [f"X{d} uses" for d in ids], "positive": [f"c{d}" for d in ids],
                                 "negatives": [[f"c{d}n"] for d in ids], "candidate_doc_ids": [[d, d] for d in ids],
                                 **base})
        if asset == "ner_dataset":
            return pl.DataFrame({"text": [f"X{d} is a Y" for d in ids], "input_ids": [[5, 6, 7, 8]] * n,
                                 "tags": [["B-CODE", "O", "O", "B-CONCEPT"]] * n, **base})
        if asset == "preference_dataset":
            return pl.DataFrame({"prompt": [f"<|user|>What is {d}?<|end|><|assistant|>" for d in ids],
                                 "chosen": [f"{d} is a thing.<|end|>" for d in ids],
                                 "rejected": [f"{d} is a place.<|end|>" for d in ids], "origin": ["derived"] * n,
                                 "rejected_doc_id": ids, **base})
        return pl.DataFrame({"prompt": [f"<|user|>What is {d}?<|end|><|assistant|>" for d in ids],
                             "response": [f"{d} is a thing.<|end|>" for d in ids],
                             "subject": ids, "relation": ["is_a"] * n, "object": ["thing"] * n, **base})

    return {"train.parquet": rows("train", 8, 0), "val.parquet": rows("val", 2, 1)}


class Versions:
    """Clean versions of every suite's asset (upstreams first), in one store."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self.raw = put_version(store, "raw_docs", raw_docs_files(), config={"max_doc_bytes": 1000})
        self.chunks = put_version(store, "cleaned_chunks", cleaned_chunks_files(self.raw),
                                  config={"chunk_size": 64}, upstream={"raw_docs": self.raw.data_version})
        self.triples = put_version(store, "relation_triples", relation_triples_files(self.chunks),
                                   config={"min_confidence": 0.3},
                                   upstream={"cleaned_chunks": self.chunks.data_version})

    def config(self, asset: str) -> dict:
        return {"raw_docs": {"max_doc_bytes": 1000}, "cleaned_chunks": {"chunk_size": 64},
                "relation_triples": {"min_confidence": 0.3}, "tokenized_corpus": {"val_ratio": 0.05}
                }.get(asset, {"seed": 1, "val_ratio": 0.2})

    def upstream(self, asset: str) -> dict:
        return {"cleaned_chunks": {"raw_docs": self.raw.data_version},
                "relation_triples": {"cleaned_chunks": self.chunks.data_version},
                "tokenized_corpus": {"cleaned_chunks": self.chunks.data_version}}.get(
                    asset, {"cleaned_chunks": self.chunks.data_version})

    def files(self, asset: str) -> Files:
        if asset == "raw_docs":
            return raw_docs_files()
        if asset == "cleaned_chunks":
            return cleaned_chunks_files(self.raw)
        if asset == "relation_triples":
            return relation_triples_files(self.chunks)
        if asset == "tokenized_corpus":
            return tokenized_corpus_files()
        return dataset_files(asset)

    def build(self, asset: str, mutate: Callable[[Files], Any] | None = None) -> StoredVersion:
        files = self.files(asset)
        config = self.config(asset)
        if mutate is not None:
            config = mutate(files) or config
        return put_version(self.store, asset, files, config=config, upstream=self.upstream(asset))


# ---- one violation per expectation ----------------------------------------------------------
def _edit(rel: str, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Files], None]:
    def mutate(files: Files) -> None:
        files[rel] = fn(files[rel])
    return mutate


def set_cell(col: str, row: int, value) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def fn(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value, dtype=df.schema[col]))
                               .otherwise(pl.col(col)).alias(col))
    return fn


DOCS, CHUNKS, TRIPLES = "docs/part-00000.parquet", "chunks/part-00000.parquet", "triples/part-00000.parquet"


def shard_counts(train: int, val: int, mutate_shards: Callable[[Files], None] | None = None):
    def mutate(files: Files) -> None:
        files["index.json"]["splits"]["train"]["docs"] = train
        files["index.json"]["splits"]["val"]["docs"] = val
        if mutate_shards:
            mutate_shards(files)
    return mutate


def _id_over_vocab(files: Files) -> None:
    arr = np.frombuffer(files["val/shard-00000.bin"], dtype="<u2").copy()
    arr[3] = VOCAB  # ids must be < vocab size
    files["val/shard-00000.bin"] = arr.tobytes()


def _empty_shard(files: Files) -> None:
    files["train/shard-00002.bin"] = b""
    files["index.json"]["splits"]["train"]["shards"].append({"path": "train/shard-00002.bin", "tokens": 0})


def _leak_doc(files: Files) -> None:
    val = files["val.parquet"]
    files["val.parquet"] = val.with_columns(doc_id=pl.Series(["train3"] + val["doc_id"].to_list()[1:]))


def _leak_candidate(files: Files) -> None:
    """gnn_dataset: a val query whose negative is a chunk of a train document (the example's own doc is val)."""
    val = files["val.parquet"]
    docs = val["candidate_doc_ids"].to_list()
    docs[0] = [docs[0][0], "train3"]
    files["val.parquet"] = val.with_columns(candidate_doc_ids=pl.Series(docs))


def _leak_item(asset: str) -> Callable[[Files], None]:
    col = {"embedding_dataset": "positive", "relation_dataset": "text", "sft_dataset": "prompt",
           "gnn_dataset": "query", "ner_dataset": "text", "preference_dataset": "prompt"}[asset]

    def mutate(files: Files) -> None:  # another document, the same text as a train item
        files["val.parquet"] = set_cell(col, 0, files["train.parquet"][col][5])(files["val.parquet"])
    return mutate


MUTATIONS: dict[tuple[str, str], Callable[[Files], Any]] = {
    ("raw_docs", "columns_and_types"): _edit(DOCS, lambda d: d.with_columns(pl.col("line").cast(pl.String))),
    ("raw_docs", "doc_id_unique"): _edit(DOCS, set_cell("doc_id", 2, "d0")),
    ("raw_docs", "content_non_empty"): _edit(DOCS, lambda d: set_cell("content", 2, None)(set_cell("content", 1, " \n ")(d))),
    ("cleaned_chunks", "columns_and_types"): _edit(CHUNKS, lambda d: d.with_columns(pl.col("n_tokens").cast(pl.Int32))),
    ("cleaned_chunks", "chunk_id_unique"): _edit(CHUNKS, set_cell("chunk_id", 1, "d0c0")),
    ("cleaned_chunks", "text_not_null"): _edit(CHUNKS, set_cell("text", 3, None)),
    ("cleaned_chunks", "chunk_length_in_bounds"): _edit(CHUNKS, lambda d: set_cell("n_tokens", 0, 65)(set_cell("n_tokens", 2, 0)(d))),
    ("cleaned_chunks", "doc_id_in_raw_docs"): _edit(CHUNKS, set_cell("doc_id", 4, "not-a-raw-doc")),
    ("relation_triples", "columns_and_types"): _edit(TRIPLES, lambda d: d.drop("extractor")),
    ("relation_triples", "confidence_in_range"): _edit(TRIPLES, lambda d: set_cell("confidence", 0, 0.1)(
        set_cell("confidence", 1, 1.5)(set_cell("confidence", 2, None)(d)))),
    ("relation_triples", "subject_non_empty"): _edit(TRIPLES, set_cell("subject", 1, "  ")),
    ("relation_triples", "object_non_empty"): _edit(TRIPLES, set_cell("object", 2, None)),
    ("relation_triples", "relation_in_label_set"): _edit(TRIPLES, set_cell("relation", 3, "likes")),
    ("relation_triples", "evidence_in_chunk"): _edit(TRIPLES, lambda d: set_cell("evidence_end", 0, 10_000)(
        set_cell("chunk_id", 1, "no-such-chunk")(d))),
    ("tokenized_corpus", "token_ids_below_vocab"): _id_over_vocab,
    ("tokenized_corpus", "no_empty_shard"): _empty_shard,
    ("tokenized_corpus", "val_share_within_tolerance"): shard_counts(10, 10),
    **{(a, "no_doc_in_both_splits"): _leak_doc for a in ("embedding_dataset", "relation_dataset", "sft_dataset",
                                                          "ner_dataset", "preference_dataset")},
    ("gnn_dataset", "no_doc_in_both_splits"): _leak_candidate,
    **{(a, "no_item_in_both_splits"): _leak_item(a) for a in ("embedding_dataset", "relation_dataset", "sft_dataset",
                                                              "gnn_dataset", "ner_dataset", "preference_dataset")},
    **{(a, "train_split_non_empty"): _edit("train.parquet", lambda d: d.head(0))
       for a in ("embedding_dataset", "relation_dataset", "sft_dataset", "gnn_dataset", "ner_dataset",
                 "preference_dataset")},
}
WARNINGS: dict[tuple[str, str], Callable[[Files], Any]] = {
    ("raw_docs", "quarantine_rate"): lambda f: f.update({"quarantine/part-00000.parquet": pl.DataFrame(
        {"source": ["a.jsonl"], "line": [9], "reason": ["invalid_json"], "detail": ["x"], "excerpt": ["{"]},
        schema=QUARANTINE_SCHEMA)}),
    ("cleaned_chunks", "duplicate_rate"): _edit("decisions/part-00000.parquet", lambda d: d.with_columns(
        decision=pl.Series(["kept", "exact_duplicate", "near_duplicate", "filtered"]))),
    ("relation_dataset", "class_balance"): _edit("train.parquet", lambda d: d.with_columns(label=pl.lit("is_a"))),
}


# An empty train split cannot also leak into val: that violation has its own version in
# test_quality_suites.py and is left out of the all-violations-at-once versions.
EXCLUSIVE = {"train_split_non_empty"}


def violate_all(asset: str):
    """One version breaking every blocking expectation of the suite (each on different rows)."""
    def mutate(files):
        for (a, check), m in sorted(MUTATIONS.items()):
            if a == asset and check not in EXCLUSIVE:
                m(files)
        WARNINGS.get((asset, "quarantine_rate"), lambda f: None)(files)
    return mutate
