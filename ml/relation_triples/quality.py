"""The relation_triples quality suite: documented columns, confidence within [min_confidence, 1],
non-empty arguments, labels of RELATIONS, every evidence span equal to its chunk's text slice.
"""

from __future__ import annotations

import polars as pl

from ml.quality.suite import (
    CheckDef, Prepared, Suite, Thresholds, built_config, column_names, excerpt, expectation, parquet_parts,
    recorded_upstream, scan_parts, schema_expectation, schema_frame, stripped_chars,
)
from ml.relation_triples.base import RELATIONS
from ml.relation_triples.extract import TRIPLE_SCHEMA
from ml.relation_triples.parts import triples_files
from ml.store import ArtifactStore, StoredVersion

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
    files = triples_files(v.path)
    schema = schema_frame({"triples": (TRIPLE_SCHEMA, files)})
    lf = scan_parts(files, list(TRIPLE_SCHEMA), TRIPLE_SCHEMA)
    have = column_names(lf)
    exprs: list[pl.Expr] = [pl.col(c) for c in ("chunk_id", "subject", "relation", "object", "confidence",
                                                "evidence_start", "evidence_end") if c in have]
    if "confidence" in have:
        exprs.append(pl.col("confidence").cast(pl.Float64).fill_nan(None).fill_null(-1.0).alias("confidence_checked"))
    for c in ("subject", "object"):
        if c in have:
            exprs.append(stripped_chars(c).alias(f"{c}_chars"))
    if "relation" in have:
        exprs.append(pl.col("relation").fill_null("").alias("relation_checked"))
    if "evidence" in have:
        exprs.append(excerpt("evidence"))
    triples = lf.select(exprs).collect()

    chunks_v, why = recorded_upstream(store, v, "cleaned_chunks")
    span_cols = {"chunk_id", "evidence_start", "evidence_end", "evidence"}
    if chunks_v is None:
        errors["evidence_in_chunk"] = why or "no upstream cleaned_chunks"
    elif not span_cols <= set(have):
        errors["evidence_in_chunk"] = f"triples lack {sorted(span_cols - set(have))}"
    else:
        inputs["cleaned_chunks"] = chunks_v.data_version
        chunks = scan_parts(parquet_parts(chunks_v.path / "chunks"), ["chunk_id", "text"], {"chunk_id": pl.String, "text": pl.String})
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

    min_conf, why = built_config(v, "min_confidence")
    if why:
        errors["confidence_in_range"] = why
    sample = ("chunk_id", "subject", "relation", "object")
    return Prepared(
        frames={"schema": schema, "triples": triples},
        expectations=[
            schema_expectation(),
            expectation("confidence_in_range", "triples", "expect_column_values_to_be_between", (*sample, "confidence"),
                 {"column": "confidence_checked = confidence, a missing one read as -1"},
                 column="confidence_checked", min_value=float(min_conf if min_conf is not None else 0.0),
                 max_value=1.0),
            expectation("subject_non_empty", "triples", "expect_column_values_to_be_between", sample,
                 column="subject_chars", min_value=1),
            expectation("object_non_empty", "triples", "expect_column_values_to_be_between", sample,
                 column="object_chars", min_value=1),
            expectation("relation_in_label_set", "triples", "expect_column_values_to_be_in_set", sample,
                 column="relation_checked", value_set=sorted(RELATIONS)),
            expectation("evidence_in_chunk", "triples", "expect_column_values_to_be_in_set",
                 ("chunk_id", "evidence_start", "evidence_end", "chunk_chars", "evidence_excerpt"),
                 {"cleaned_chunks": inputs.get("cleaned_chunks")},
                 column="evidence_in_chunk", value_set=[True]),
        ],
        errors=errors, inputs=inputs,
    )


SUITE = Suite("relation_triples", RELATION_TRIPLES_CHECKS, _relation_triples)
