"""Curation stage: cleaned_chunks and relation_triples, from raw_docs."""

from pathlib import Path

import dagster as dg
import polars as pl

import ml.cleaned_chunks.chunking as chunking
import ml.cleaned_chunks.clean as clean
import ml.cleaned_chunks.filters as filters
import ml.cleaned_chunks.minhash as minhash
import ml.cleaned_chunks.pipeline as pipeline
import ml.curation_units as curation_units
import ml.relation_triples as triples_pkg
from assets.config import RelationTriplesConfig
from assets.versioned import corruption_failure, materialize_versioned, preview_table, upstream_version
from ml.fsutil import source_digest
from ml.paths import work_dir
from ml.store import BuildResult, CorruptVersionError, StoredVersion, compute_fingerprint
from resources import ArtifactStoreResource, CatalogResource
from resources.dagster_config import dagster_config_from_dataclass

CleanSettings = dagster_config_from_dataclass(clean.CleanConfig, "CleanSettings")
FilterSettings = dagster_config_from_dataclass(
    filters.FilterConfig, "FilterSettings", doc="Quality rules; a threshold set to null switches that rule off.",
    descriptions={"max_top_ngram_char_frac": "n (as a string) -> max fraction of characters in the most frequent n-gram.",
                  "max_dup_ngram_char_frac": "n (as a string) -> max fraction of characters in repeated n-grams."})
_ChunkFields = dagster_config_from_dataclass(chunking.ChunkConfig, "ChunkFields", descriptions={
    "chunk_size": "Max tokens per chunk (regex pre-tokenizer, independent of the trained tokenizer)."})
_CurationFields = dagster_config_from_dataclass(
    pipeline.CurationConfig, "CurationFields", base=_ChunkFields,
    only=("exact_dedup", "near_dedup", "jaccard_threshold", "shingle_size", "num_perm", "minhash_seed", "batch_docs"),
    descriptions={"jaccard_threshold": "Near-duplicate threshold; LSH bands × rows are derived from it."})


class CleanedChunksConfig(_CurationFields):
    """cleaned_chunks' run config: the fields of ml/cleaned_chunks' CurationConfig, ChunkConfig (flat),
    CleanConfig (clean) and FilterConfig (filters)."""

    clean: CleanSettings = CleanSettings()
    filters: FilterSettings = FilterSettings()

    def to_ml(self) -> pipeline.CurationConfig:
        f = self.filters.model_dump()
        for key in ("max_top_ngram_char_frac", "max_dup_ngram_char_frac"):
            f[key] = tuple(sorted((int(n), v) for n, v in f[key].items())) if f[key] else None
        c = self.clean.model_dump()
        c["boilerplate_patterns"] = tuple(c["boilerplate_patterns"])
        return pipeline.CurationConfig(
            clean=clean.CleanConfig(**c), filters=filters.FilterConfig(**f),
            chunk=chunking.ChunkConfig(self.chunk_size, self.overlap, self.min_chunk_tokens),
            exact_dedup=self.exact_dedup, near_dedup=self.near_dedup, jaccard_threshold=self.jaccard_threshold,
            shingle_size=self.shingle_size, num_perm=self.num_perm, minhash_seed=self.minhash_seed,
            batch_docs=self.batch_docs,
        )


def _decision_rows(version: StoredVersion) -> dict:
    d = pipeline.read_decisions(version.path).collect()
    return {"doc_decisions": d.with_columns(asset=pl.lit("cleaned_chunks"), data_version=pl.lit(version.data_version))}


def _chunks_metadata(version: StoredVersion) -> dict:
    s = version.stats
    decisions = {k.split(".", 1)[1]: int(v) for k, v in s.items() if k.startswith("docs.")}
    filtered = {k.split(".", 1)[1]: int(v) for k, v in s.items() if k.startswith("filtered.")}
    chunks = pipeline.read_chunks(version.path).select("chunk_id", "doc_id", "n_tokens", "text").head(5).collect()
    return {
        "docs_in": int(s["docs_in"]), "docs_out": int(s["docs_out"]), "chunks": int(s["chunks"]),
        "duplicate_rate": float(s["duplicate_rate"]), "mean_chunk_tokens": float(s["mean_chunk_tokens"]),
        "accounting": f"{int(s['docs_in'])} docs = " + " + ".join(f"{v} {k}" for k, v in decisions.items()),
        "decisions": dg.MetadataValue.json(decisions),
        "filtered_by_rule": dg.MetadataValue.json(filtered),
        "lsh": f"{int(s.get('lsh.bands', 0))} bands x {int(s.get('lsh.rows', 0))} rows",
        "preview": preview_table(chunks),
    }


def _cc_upstream(raw: StoredVersion) -> dict[str, str]:
    return {"raw_docs": raw.data_version}


@dg.op(ins={"raw_docs": dg.In(dg.Nothing)}, out={"raw": dg.Out(), "todo": dg.DynamicOut()})
def cleaned_chunks_plan(context: dg.OpExecutionContext, config: CleanedChunksConfig, store: ArtifactStoreResource,
                        catalog: CatalogResource):  # catalog: where upstream_version records a corrupt version
    """The raw_docs version read, and one unit per landing file unless the whole version is stored."""
    st = store.get()
    raw = upstream_version(context, st, "raw_docs")
    yield dg.Output(raw.data_version, "raw")
    key = dg.AssetKey("cleaned_chunks")
    fp = compute_fingerprint("cleaned_chunks", context.assets_def.code_versions_by_key.get(key) or "unversioned",
                             config.model_dump(), _cc_upstream(raw))
    if st.lookup("cleaned_chunks", fp, verify=False) is not None:
        context.log.info("cleaned_chunks: already a stored version for this raw_docs version; no unit to compute")
        return
    for i, unit in enumerate(curation_units.plan_units(raw)):
        yield dg.DynamicOutput((raw.data_version, i, unit), output_name="todo", mapping_key=unit.name)


@dg.op
def cleaned_chunks_unit(context: dg.OpExecutionContext, config: CleanedChunksConfig, store: ArtifactStoreResource,
                        catalog: CatalogResource, todo: tuple) -> tuple:
    """One unit's per-document work (clean, rules, exact key, MinHash, chunks), stored or found."""
    raw_version, i, unit = todo
    st = store.get()
    try:
        done = curation_units.curate_unit(st, lambda: st.get("raw_docs", raw_version), unit, config.to_ml(),
                                          context.run.run_id)
    except CorruptVersionError as err:
        raise corruption_failure(context, st, catalog.get(), err) from None
    context.log.info(f"unit {unit.name}: {done.data_version} ({'reused' if done.cache_hit else 'computed'})")
    return i, done.data_version


@dg.op
def cleaned_chunks_merge(context: dg.OpExecutionContext, config: CleanedChunksConfig, store: ArtifactStoreResource,
                         catalog: CatalogResource, raw: str, done: list) -> dg.MaterializeResult:
    """The global dedup merge (only the units after the longest stored prefix) and the version."""
    st = store.get()
    raw_version = upstream_version(context, st, "raw_docs")
    if raw_version.data_version != raw:
        raise dg.Failure(f"raw_docs moved from {raw} to {raw_version.data_version} during this run; run it again")
    cfg = config.to_ml()

    def build(out: Path) -> BuildResult:
        found = [v for _, v in sorted(done)]
        plan = curation_units.plan_units(raw_version)
        if len(found) != len(plan):  # planned as a cache hit that is gone now: compute the units here
            found = [curation_units.curate_unit(st, raw_version, u, cfg, context.run.run_id).data_version for u in plan]
        report = curation_units.merge_and_assemble(st, found, cfg, out, context.run.run_id, context.log.info)
        stats = report.stats()
        facts = {k: stats.pop(k) for k in list(stats) if k.startswith("lsh.") and k not in ("lsh.bands", "lsh.rows")}
        return BuildResult(stats=stats, rows=report.chunks, run_facts=facts)

    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(), upstream=_cc_upstream(raw_version),
        build=build, catalog_rows=_decision_rows, metadata=_chunks_metadata,
    )


def _each_cc_op(config: dict | None) -> dict:
    return {name: {"config": config or {}}
            for name in ("cleaned_chunks_plan", "cleaned_chunks_unit", "cleaned_chunks_merge")}


@dg.graph_asset(
    group_name="corpus",
    ins={"raw_docs": dg.AssetIn(dagster_type=dg.Nothing)},
    code_version=source_digest(*(m.__file__ for m in (clean, filters, minhash, chunking, pipeline, curation_units)),
                               __file__),
    kinds={"polars"},
    config=dg.ConfigMapping(config_fn=_each_cc_op, config_schema=CleanedChunksConfig.to_config_schema()),
    description="Cleaned (NFKC, markup, boilerplate), exact- and near-deduplicated (MinHash LSH), "
    "quality-filtered (Gopher, C4) and chunked text, with one decision per raw document; one unit step "
    "per landing file, then a small merge step (global dedup against the stored index).",
)
def cleaned_chunks(raw_docs):
    raw, todo = cleaned_chunks_plan(raw_docs)
    return cleaned_chunks_merge(raw, todo.map(cleaned_chunks_unit).collect())


def _triples_metadata(version: StoredVersion) -> dict:
    s = version.stats
    labels = {k.split(".", 1)[1]: int(v) for k, v in s.items() if k.startswith("relation.") and v}
    hist = {k.split(".", 1)[1]: int(v) for k, v in s.items() if k.startswith("confidence_hist.")}
    preview = (triples_pkg.read_triples(version.path)
               .select("subject", "relation", "object", "confidence", "evidence").head(8).collect())
    return {
        "triples": int(s["triples"]), "chunks": int(s["chunks"]),
        "chunks_parsed": int(s["chunks_parsed"]), "chunks_cached": int(s["chunks_cached"]),
        "below_min_confidence": int(s["below_min_confidence"]),
        "per_relation": dg.MetadataValue.json(labels), "confidence_histogram": dg.MetadataValue.json(hist),
        "preview": preview_table(preview),
    }


@dg.asset(
    group_name="corpus",
    deps=["cleaned_chunks"],
    code_version=source_digest(*sorted(str(p) for p in Path(triples_pkg.__file__).parent.glob("*.py")
                                       if p.name != "quality.py"), __file__),  # its suite is the check's
    kinds={"polars"},
    description="Relation triples (subject, relation, object, confidence, evidence span) extracted from "
    "cleaned_chunks by a pluggable parser; unchanged chunks come from a per-chunk cache.",
)
def relation_triples(
    context: dg.AssetExecutionContext, config: RelationTriplesConfig,
    store: ArtifactStoreResource, catalog: CatalogResource,
) -> dg.MaterializeResult:
    st = store.get()
    chunks = upstream_version(context, st, "cleaned_chunks")
    extractor = triples_pkg.get_extractor(config.parser)
    cache = triples_pkg.TripleCache(work_dir(st.home) / "relation_triples" / "cache", extractor.name, extractor.version)

    def build(out: Path) -> BuildResult:
        frame = pipeline.read_chunks(chunks.path).select("chunk_id", "text").collect()
        totals = triples_pkg.write_triples(frame, out, extractor, min_confidence=config.min_confidence,
                                           cache=cache, batch_chunks=config.batch_chunks)
        return BuildResult(stats=totals, rows=int(totals.get("triples", 0)))

    return materialize_versioned(
        context, store=st, catalog=catalog.get(),
        config={**config.model_dump(), "extractor": f"{extractor.name}@{extractor.version}"},
        upstream={"cleaned_chunks": chunks.data_version}, build=build, metadata=_triples_metadata,
    )
