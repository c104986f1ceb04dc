"""The life of one materialization (DESIGN.md), shared by every asset.

1. Resolve the exact upstream versions this run reads (``upstream_version``).
2. fingerprint = digest(asset, code version, resolved config, upstream data versions).
3. The store has a version for that fingerprint: reuse it (cache hit), compute nothing.
4. Otherwise ``build`` computes into a staging directory; the content digest becomes
   the data version; the directory is renamed into place.
5. Catalog rows in one atomic batch: asset_versions, lineage_edges, and (the first
   time the catalog sees this version) the asset's own stats/decisions/quarantine.
6. Return the data version and metadata to Dagster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import dagster as dg
import polars as pl

from ml.catalog import Catalog, now_utc
from ml.store import ArtifactStore, BuildResult, StoredVersion, compute_fingerprint

CatalogRows = Mapping[str, pl.DataFrame | list[dict[str, Any]]]


def upstream_version(context: dg.AssetExecutionContext, store: ArtifactStore, asset: str) -> StoredVersion:
    """The upstream version Dagster recorded last, checked to exist in the store."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"upstream asset {asset!r} has never been materialized; materialize it first")
    mat = event.asset_materialization
    data_version = (mat.tags or {}).get("dagster/data_version")
    if not data_version:
        raise dg.Failure(f"latest materialization of {asset!r} carries no data version")
    if not store.has_version(asset, data_version):
        raise dg.Failure(
            f"{asset}@{data_version} is recorded by Dagster but missing from the store at {store.root}; "
            "re-materialize it"
        )
    return store.get(asset, data_version)


def fingerprint_for(context: dg.AssetExecutionContext, config: Mapping[str, Any], upstream: Mapping[str, str]) -> str:
    """The fingerprint ``materialize_versioned`` will use (e.g. to find work/<asset>/<fingerprint>/ to resume)."""
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key) or "unversioned"
    return compute_fingerprint(context.asset_key.to_user_string(), code_version, config, upstream)


def materialize_versioned(
    context: dg.AssetExecutionContext,
    *,
    store: ArtifactStore,
    catalog: Catalog,
    config: Mapping[str, Any],
    upstream: Mapping[str, str],
    build: Callable[[Path], BuildResult],
    catalog_rows: Callable[[StoredVersion], CatalogRows] = lambda v: {},
    metadata: Callable[[StoredVersion], Mapping[str, Any]] = lambda v: {},
) -> dg.MaterializeResult:
    """Run steps 2-6 for the asset being materialized. ``upstream`` maps name -> version."""
    asset = context.asset_key.to_user_string()
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key) or "unversioned"
    fingerprint = fingerprint_for(context, config, upstream)
    version = store.lookup(asset, fingerprint)
    if version is not None:
        context.log.info(f"cache hit: {asset}@{version.data_version} already built for fingerprint {fingerprint}")
    else:
        version = store.put(
            asset, build, fingerprint=fingerprint, code_version=code_version, config=config,
            upstream=upstream, run_id=context.run.run_id,
        )
        how = "identical content existed" if version.reused_content else "new version"
        context.log.info(f"built {asset}@{version.data_version} ({how})")

    created = now_utc()
    first_sighting = not catalog.query(
        "SELECT 1 FROM asset_versions WHERE asset = ? AND data_version = ? LIMIT 1", [asset, version.data_version]
    ).height
    rows: dict[str, Any] = {
        "asset_versions": [{
            "asset": asset, "data_version": version.data_version, "code_version": code_version,
            "fingerprint": fingerprint, "run_id": context.run.run_id, "created_at": created,
            "path": str(version.path), "bytes": version.bytes, "rows": version.manifest.get("rows"),
            "cache_hit": version.cache_hit,
        }],
        "lineage_edges": [
            {"asset": asset, "data_version": version.data_version, "upstream_asset": up,
             "upstream_version": up_version, "run_id": context.run.run_id, "created_at": created}
            for up, up_version in sorted(upstream.items())
        ],
    }
    if first_sighting:
        stats = [{"asset": asset, "data_version": version.data_version, "stat": k, "value": float(v)}
                 for k, v in version.stats.items() if isinstance(v, (int, float))]
        rows["dataset_stats"] = stats
        rows.update(catalog_rows(version))
    catalog.append(rows)
    try:  # keep catalog.duckdb's views usable for outside tools; never fail a run over it
        catalog.ensure_views()
    except Exception as exc:  # e.g. someone holds catalog.duckdb open for writing
        context.log.warning(f"could not refresh views in {catalog.db_path}: {exc}")

    return dg.MaterializeResult(
        data_version=dg.DataVersion(version.data_version),
        metadata={
            "path": dg.MetadataValue.path(str(version.path)),
            "data_version": version.data_version,
            "code_version": code_version,
            "fingerprint": fingerprint,
            "cache_hit": version.cache_hit,
            "rows": dg.MetadataValue.int(version.manifest.get("rows") or 0),
            "bytes": dg.MetadataValue.int(version.bytes),
            "upstream": dg.MetadataValue.json(dict(upstream)),
            **metadata(version),
        },
    )


def preview_table(df: pl.DataFrame, max_chars: int = 80) -> dg.TableMetadataValue:
    """A small frame as a Dagster table (long strings shortened) for the UI."""
    columns = [dg.TableColumn(name, "string" if dtype == pl.String else str(dtype).lower())
               for name, dtype in df.schema.items()]
    records = []
    for row in df.iter_rows(named=True):
        records.append(dg.TableRecord({
            k: (v[: max_chars - 1] + "…" if isinstance(v, str) and len(v) > max_chars else v)
            for k, v in row.items()
        }))
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))
