"""The raw_docs quality suite: documented columns, unique doc ids, non-empty content, quarantine rate.
"""

from __future__ import annotations

import polars as pl

from ml.quality.suite import (
    CheckDef, Prepared, Suite, Thresholds, column_names, excerpt, expectation, parquet_parts, scan_parts,
    schema_expectation, schema_frame, stripped_chars,
)
from ml.raw_docs import DOC_SCHEMA, QUARANTINE_SCHEMA
from ml.store import ArtifactStore, StoredVersion

RAW_DOCS_CHECKS = (
    CheckDef("columns_and_types", True, "docs and quarantine parts have exactly the documented columns "
             "and dtypes (ml/FORMATS.md)"),
    CheckDef("doc_id_unique", True, "no doc_id appears twice"),
    CheckDef("content_non_empty", True, "every document has content with a non-whitespace character"),
    CheckDef("quarantine_rate", False, "quarantined lines / lines read stays under quarantine_rate_max"),
)


def _raw_docs(store: ArtifactStore, v: StoredVersion, t: Thresholds) -> Prepared:
    docs_files, q_files = parquet_parts(v.path / "docs"), parquet_parts(v.path / "quarantine")
    schema = schema_frame({"docs": (DOC_SCHEMA, docs_files), "quarantine": (QUARANTINE_SCHEMA, q_files)})
    lf = scan_parts(docs_files, ["doc_id", "title", "source", "line", "content"], DOC_SCHEMA)
    have = column_names(lf)
    derived = [stripped_chars("content").alias("content_chars"), excerpt("content")] if "content" in have else []
    docs = lf.select([c for c in ("doc_id", "title", "source", "line") if c in have] + derived).collect()
    quarantined = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in q_files)
    lines = docs.height + quarantined
    summary = pl.DataFrame({"docs": [docs.height], "quarantined": [quarantined], "lines_read": [lines],
                            "quarantine_rate": [quarantined / lines if lines else 0.0]})
    sample = ("doc_id", "title", "source", "line")
    return Prepared(
        frames={"schema": schema, "docs": docs, "summary": summary},
        expectations=[
            schema_expectation(),
            expectation("doc_id_unique", "docs", "expect_column_values_to_be_unique", sample, column="doc_id"),
            expectation("content_non_empty", "docs", "expect_column_values_to_be_between", (*sample, "content_excerpt"),
                 column="content_chars", min_value=1),
            expectation("quarantine_rate", "summary", "expect_column_values_to_be_between",
                 ("docs", "quarantined", "lines_read", "quarantine_rate"),
                 column="quarantine_rate", min_value=0.0, max_value=t.quarantine_rate_max),
        ],
    )


SUITE = Suite("raw_docs", RAW_DOCS_CHECKS, _raw_docs)
