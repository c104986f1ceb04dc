"""The cleaned_chunks quality suite: documented columns, unique chunk ids, chunk length within the
version's chunk_size, every doc_id in the raw_docs version it was built from, duplicate rate.
"""

from __future__ import annotations

import polars as pl

from ml.cleaned_chunks.chunking import CHUNK_SCHEMA
from ml.cleaned_chunks.pipeline import DECISION_SCHEMA
from ml.quality.suite import (
    CheckDef, Prepared, Suite, Thresholds, built_config, column_names, excerpt, expectation, parquet_parts,
    recorded_upstream, scan_parts, schema_expectation, schema_frame,
)
from ml.store import ArtifactStore, StoredVersion

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
    files = parquet_parts(v.path / "chunks")
    schema = schema_frame({"chunks": (CHUNK_SCHEMA, files)})
    lf = scan_parts(files, ["chunk_id", "doc_id", "chunk_index", "n_tokens", "text"], CHUNK_SCHEMA)
    have = column_names(lf)
    exprs: list[pl.Expr] = [pl.col(c) for c in ("chunk_id", "doc_id", "chunk_index") if c in have]
    if "n_tokens" in have:  # a missing count reads as -1: out of bounds
        exprs.append(pl.col("n_tokens").cast(pl.Int64).fill_null(-1))
    if "text" in have:  # null exactly where text is null; the text itself never goes to pandas
        exprs += [pl.col("text").str.len_chars().cast(pl.Int64).alias("text_chars"), excerpt("text")]
    raw, why = recorded_upstream(store, v, "raw_docs")
    if raw is not None and "doc_id" in have:
        inputs["raw_docs"] = raw.data_version
        raw_ids = scan_parts(parquet_parts(raw.path / "docs"), ["doc_id"], {"doc_id": pl.String}).collect()
        if "doc_id" in raw_ids.columns:
            exprs.append(pl.col("doc_id").is_in(raw_ids["doc_id"].drop_nulls().implode())
                         .fill_null(False).alias("doc_id_in_raw_docs"))
        else:
            errors["doc_id_in_raw_docs"] = f"raw_docs@{raw.data_version} has no doc_id column"
    elif why:
        errors["doc_id_in_raw_docs"] = why
    chunks = lf.select(exprs).collect()

    chunk_size, why = built_config(v, "chunk_size")
    if why:
        errors["chunk_length_in_bounds"] = why
    d = scan_parts(parquet_parts(v.path / "decisions"), ["decision"], DECISION_SCHEMA).collect()
    docs_in = d.height
    dups = int(d["decision"].is_in(["exact_duplicate", "near_duplicate"]).sum()) if "decision" in d.columns else 0
    summary = pl.DataFrame({"docs_in": [docs_in], "duplicates": [dups],
                            "duplicate_rate": [dups / docs_in if docs_in else 0.0]})
    sample = ("chunk_id", "doc_id", "chunk_index")
    return Prepared(
        frames={"schema": schema, "chunks": chunks, "summary": summary},
        expectations=[
            schema_expectation(),
            expectation("chunk_id_unique", "chunks", "expect_column_values_to_be_unique", sample, column="chunk_id"),
            expectation("text_not_null", "chunks", "expect_column_values_to_not_be_null", sample, column="text_chars",
                 notes={"column": "text_chars = characters of text, null exactly where text is null"}),
            expectation("chunk_length_in_bounds", "chunks", "expect_column_values_to_be_between",
                 (*sample, "n_tokens", "text_excerpt"), column="n_tokens", min_value=1,
                 **({"max_value": int(chunk_size)} if chunk_size is not None else {})),
            expectation("doc_id_in_raw_docs", "chunks", "expect_column_values_to_be_in_set", sample,
                 {"raw_docs": inputs.get("raw_docs")}, column="doc_id_in_raw_docs", value_set=[True]),
            expectation("duplicate_rate", "summary", "expect_column_values_to_be_between",
                 ("docs_in", "duplicates", "duplicate_rate"),
                 column="duplicate_rate", min_value=0.0, max_value=t.duplicate_rate_max),
        ],
        errors=errors, inputs=inputs,
    )


SUITE = Suite("cleaned_chunks", CLEANED_CHUNKS_CHECKS, _cleaned_chunks)
