"""raw_docs: every line of the landing zone, validated into docs or quarantined with a reason."""


from pathlib import Path

import dagster as dg
import polars as pl

import ml.raw_docs as engine
from assets.versioned import materialize_versioned, preview_table
from ml.fsutil import source_digest
from ml.store import BuildResult, StoredVersion
from resources import ArtifactStoreResource, CatalogResource, LandingZone


class RawDocsConfig(dg.Config):
    max_doc_bytes: int = 2_000_000
    """Lines longer than this many bytes are quarantined as too_large (never read whole)."""
    excerpt_chars: int = 160
    """Characters of a rejected line kept in the quarantine excerpt."""
    batch_rows: int = 50_000
    """Rows per Parquet part (bounds memory)."""


def _catalog_rows(version: StoredVersion) -> dict:
    q = engine.read_quarantine(version.path).collect()
    return {"quarantine": q.select(
        "source", "line", "reason", "excerpt", "detail",
        asset=pl.lit("raw_docs"), data_version=pl.lit(version.data_version),
        run_id=pl.lit(version.manifest["run_id"]),
    )}


def _metadata(version: StoredVersion) -> dict:
    s = version.stats
    reasons = {r: s[f"quarantine.{r}"] for r in engine.REASONS if s.get(f"quarantine.{r}")}
    docs = engine.read_docs(version.path)
    return {
        "lines_read": s["lines_read"], "kept": s["kept"], "quarantined": s["quarantined"],
        "accounting": f"{s['lines_read']} lines read = {s['kept']} kept + {s['quarantined']} quarantined",
        "quarantine_reasons": dg.MetadataValue.json(reasons),
        "per_source": dg.MetadataValue.json(s.get("per_source", {})),
        "preview": preview_table(docs.select(
            "doc_id", "title", "source", "line", chars=pl.col("content").str.len_chars()
        ).head(5).collect()),
    }


@dg.asset(
    group_name="data",
    code_version=source_digest(engine.__file__, __file__),
    kinds={"polars"},
    description="Validated documents from every *.jsonl / *.jsonl.gz in the landing zone, "
    "with a quarantine of rejected lines (source, line, reason, excerpt).",
)
def raw_docs(
    context: dg.AssetExecutionContext,
    config: RawDocsConfig,
    store: ArtifactStoreResource,
    catalog: CatalogResource,
    landing: LandingZone,
) -> dg.MaterializeResult:
    files = engine.scan_landing(landing.dir())
    if not files:
        raise dg.Failure(f"no *.jsonl or *.jsonl.gz files in {landing.dir()} (try: lineage sample-corpus)")
    cfg = engine.IngestConfig(config.max_doc_bytes, config.excerpt_chars, config.batch_rows)

    def build(out: Path) -> BuildResult:
        report = engine.ingest(files, out, cfg)
        stats = report.stats()
        stats["per_source"] = {k: dict(v) for k, v in report.per_source.items()}
        return BuildResult(stats=stats, rows=report.kept)

    return materialize_versioned(
        context, store=store.get(), catalog=catalog.get(), config=config.model_dump(),
        upstream={f"landing:{f.relpath}": f.sha256[:16] for f in files},
        build=build, catalog_rows=_catalog_rows, metadata=_metadata,
    )
