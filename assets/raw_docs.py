"""raw_docs: every line of the landing zone, validated into docs or quarantined with a reason.

A graph-backed asset: ``raw_docs_plan`` lists the landing files, one ``raw_docs_unit`` step per
file validates it into a stored unit (found by fingerprint when that file was seen before), and
``raw_docs_assemble`` (a small step) assembles the version from the units (ml/curation_units.py).
With the multiprocess executor the unit steps run side by side; with Celery, on the workers."""


from pathlib import Path

import dagster as dg
import polars as pl

import ml.curation_units as units
import ml.raw_docs as engine
from assets.versioned import materialize_versioned, preview_table
from ml.fsutil import source_digest
from ml.store import BuildResult, StoredVersion, compute_fingerprint
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from resources.dagster_config import dagster_config_from_dataclass


class RawDocsConfig(dagster_config_from_dataclass(engine.IngestConfig, "RawDocsFields", descriptions={
        "max_doc_bytes": "Lines longer than this many bytes are quarantined as too_large (never read whole).",
        "excerpt_chars": "Characters of a rejected line kept in the quarantine excerpt.",
        "batch_rows": "Rows per Parquet part (bounds memory).",
        "slice_bytes": "A landing file larger than this is ingested in slices of about this many bytes, each a "
                       "unit step of its own (cut after a newline; 0: never)."})):
    def to_ml(self) -> engine.IngestConfig:
        return engine.IngestConfig(self.max_doc_bytes, self.excerpt_chars, self.batch_rows, self.slice_bytes)


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


def _upstream(files: list[engine.LandingFile]) -> dict[str, str]:
    return {f"landing:{f.relpath}": f.sha256[:16] for f in files}


@dg.op(out={"files": dg.Out(), "todo": dg.DynamicOut()})
def raw_docs_plan(context: dg.OpExecutionContext, config: RawDocsConfig, store: ArtifactStoreResource,
                  landing: LandingZone):
    """The landing files, and one unit per file unless the whole version is already stored."""
    home = store.get().home
    cache = engine.scan_cache(home)  # what a scan remembers: digests, cuts
    files = engine.scan_landing(landing.dir(), cache / "landing_digests.json")
    if not files:
        raise dg.Failure(f"no *.jsonl or *.jsonl.gz files in {landing.dir()} (try: lineage sample-corpus)")
    files = engine.slice_files(files, config.slice_bytes, cache / "slice_cuts.json")  # a large file: several units
    yield dg.Output(files, "files")
    key = dg.AssetKey("raw_docs")
    fp = compute_fingerprint("raw_docs", context.assets_def.code_versions_by_key.get(key) or "unversioned",
                             config.model_dump(), _upstream(files))
    if store.get().lookup("raw_docs", fp, verify=False) is not None:
        context.log.info("raw_docs: this landing state is already a stored version; no unit to compute")
        return
    for i, f in enumerate(files):
        yield dg.DynamicOutput((i, f), output_name="todo", mapping_key=f"u{i:05d}")


@dg.op
def raw_docs_unit(context: dg.OpExecutionContext, config: RawDocsConfig, store: ArtifactStoreResource,
                  todo: tuple) -> tuple:
    """One landing file validated into a stored unit (or found by its fingerprint)."""
    i, lf = todo
    unit = units.ingest_unit(store.get(), lf, config.to_ml(), context.run.run_id)
    context.log.info(f"{lf.relpath}: unit {unit.data_version} ({'reused' if unit.cache_hit else 'computed'})")
    return i, unit.data_version


@dg.op
def raw_docs_assemble(context: dg.OpExecutionContext, config: RawDocsConfig, store: ArtifactStoreResource,
                      catalog: CatalogResource, files: list, done: list) -> dg.MaterializeResult:
    st = store.get()
    cfg = config.to_ml()

    def build(out: Path) -> BuildResult:
        found = [v for _, v in sorted(done)]
        if len(found) != len(files):  # planned as a cache hit that is gone now: compute the units here
            found = [units.ingest_unit(st, f, cfg, context.run.run_id).data_version for f in files]
        report = units.assemble_raw(st, files, found, out)
        stats = report.stats()
        stats["per_source"] = {k: dict(v) for k, v in report.per_source.items()}
        return BuildResult(stats=stats, rows=report.kept, run_facts={"units": len(files)})

    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(), upstream=_upstream(files),
        build=build, catalog_rows=_catalog_rows, metadata=_metadata,
    )


def _each_op(config: dict | None) -> dict:
    return {name: {"config": config or {}} for name in ("raw_docs_plan", "raw_docs_unit", "raw_docs_assemble")}


@dg.graph_asset(
    group_name="data",
    code_version=source_digest(engine.__file__, units.__file__, __file__),
    kinds={"polars"},
    config=dg.ConfigMapping(config_fn=_each_op, config_schema=RawDocsConfig.to_config_schema()),
    description="Validated documents from every *.jsonl / *.jsonl.gz in the landing zone, "
    "with a quarantine of rejected lines (source, line, reason, excerpt); one unit step per landing file.",
)
def raw_docs():
    files, todo = raw_docs_plan()
    return raw_docs_assemble(files, todo.map(raw_docs_unit).collect())
