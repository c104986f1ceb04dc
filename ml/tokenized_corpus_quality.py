"""The tokenized_corpus quality suite: token ids below the tokenizer's vocabulary, no empty shard,
the val share within tolerance of the version's val_ratio.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl

from ml.quality.suite import (
    CheckDef, Prepared, Suite, Thresholds, built_config, expectation, recorded_upstream,
)
from ml.store import ArtifactStore, StoredVersion
from ml.tokenized_corpus import DTYPES, INDEX

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
    tok, _ = recorded_upstream(store, v, "tokenizer")
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

    ratio, why = built_config(v, "val_ratio")
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
            expectation("token_ids_below_vocab", "shards", "expect_column_values_to_be_between",
                 ("split", "path", "tokens", "max_id"), {"vocab_size": vocab, "vocab_from": vocab_source},
                 column="max_id", max_value=(vocab - 1) if vocab is not None else None),
            expectation("no_empty_shard", "shards", "expect_column_values_to_be_between",
                 ("split", "path", "declared_tokens", "tokens"), column="tokens", min_value=1),
            expectation("val_share_within_tolerance", "splits", "expect_column_values_to_be_between",
                 ("train_docs", "val_docs", "val_share", "val_ratio", "allowed_deviation"),
                 column="val_share", min_value=max(0.0, r - allowed), max_value=min(1.0, r + allowed)),
        ],
        errors=errors, inputs=inputs,
    )


SUITE = Suite("tokenized_corpus", TOKENIZED_CORPUS_CHECKS, _tokenized_corpus)
