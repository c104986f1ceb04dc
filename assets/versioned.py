"""The life of one materialization, shared by every asset (DESIGN.md, "Life of one materialization").

upstream versions -> fingerprint -> cache hit, or build into staging and publish -> catalog rows in one
atomic batch -> data version and metadata. Every version a step reads or reuses is verified first; a
corrupt one fails the step, is recorded in ``corrupt_versions`` and moved aside.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import dagster as dg
import polars as pl

from ml.catalog import Catalog, corrupt_rows, now_utc, own_batch_id, repair_batch_id, stat_rows
from ml import run_record
from ml.faults import fault_point
from ml.fsutil import source_files
from ml.run_record import flat_numbers
from ml.store import ArtifactStore, BuildResult, CorruptVersionError, StoredVersion, compute_fingerprint

CatalogRows = Mapping[str, pl.DataFrame | list[dict[str, Any]]]


def corruption_failure(context, store: ArtifactStore, catalog: Catalog | None, err: CorruptVersionError) -> dg.Failure:
    """Record a corrupt version (catalog rows), move it aside, and the Failure that ends the step."""
    moved = store.quarantine(err.asset, err.data_version)
    if catalog is not None:
        step = getattr(getattr(context, "op_def", None), "name", None) or "a step"
        catalog.append({"corrupt_versions": corrupt_rows(err, f"step {step}", context.run.run_id, moved)})
    context.log.error(str(err))
    return dg.Failure(
        description=f"{err}. The version was moved to {moved} and recorded in the catalog table corrupt_versions; "
                    f"re-materialize {err.asset} to rebuild it.",
        metadata={"asset": err.asset, "data_version": err.data_version, "moved_to": str(moved),
                  "problems": dg.MetadataValue.json(err.problems)},
    )


def _catalog_of(context) -> Catalog | None:
    res = getattr(context.resources, "catalog", None)
    return res.get() if res is not None and hasattr(res, "get") else None


def upstream_version(context: dg.AssetExecutionContext, store: ArtifactStore, asset: str) -> StoredVersion:
    """The upstream version Dagster recorded last, checked to exist in the store and verified
    against its manifest (a corrupt one fails the step: ``corruption_failure``)."""
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
    catalog = _catalog_of(context)
    try:
        version = store.open(asset, data_version)
    except CorruptVersionError as err:
        raise corruption_failure(context, store, catalog, err) from None
    if catalog is not None and catalog.repair_version(version):
        context.log.warning(f"{asset}@{data_version} was in the store but not in the catalog: recorded it now")
    return version



def declared_inputs(context: dg.AssetExecutionContext, store: ArtifactStore) -> dict[str, StoredVersion]:
    """``upstream_version`` of every asset this asset names in its ``deps``: inputs are declared once."""
    keys = context.assets_def.asset_deps[context.asset_key]
    return {name: upstream_version(context, store, name) for name in sorted(k.to_user_string() for k in keys)}

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
    facts: dict[str, float] = {}  # this run's facts (filled by the build; none on a cache hit)
    try:
        version = store.lookup(asset, fingerprint)  # verified against its manifest
        if version is not None:
            context.log.info(f"cache hit: {asset}@{version.data_version} already built for fingerprint {fingerprint}")
        else:
            version = store.put(
                asset, _recording_run(build, context.run.run_id, facts), fingerprint=fingerprint, code_version=code_version, config=config,
                upstream=upstream, run_id=context.run.run_id,
                extra={"code_files": source_files(code_version)},  # lets `lineage rebuild` name changed files
            )
            how = "identical content existed" if version.reused_content else "new version"
            context.log.info(f"built {asset}@{version.data_version} ({how})")
    except CorruptVersionError as err:  # the cache hit, or a version the build read
        raise corruption_failure(context, store, catalog, err) from None

    fault_point("materialize.before_catalog")
    if version.cache_hit or version.reused_content:  # made by another run: is it in the catalog at all?
        if catalog.repair_version(version):
            context.log.warning(f"{asset}@{version.data_version} was in the store but not in the catalog: recorded it")
    created = now_utc()
    rows: dict[str, Any] = {
        "asset_versions": [{
            "asset": asset, "data_version": version.data_version, "code_version": code_version,
            "fingerprint": fingerprint, "run_id": context.run.run_id, "created_at": created,
            "path": str(version.location), "bytes": version.bytes, "rows": version.manifest.get("rows"),
            "cache_hit": version.cache_hit,
        }],
        "lineage_edges": [
            {"asset": asset, "data_version": version.data_version, "upstream_asset": up,
             "upstream_version": up_version, "run_id": context.run.run_id, "created_at": created}
            for up, up_version in sorted(upstream.items())
        ],
    }
    own = own_batch_id(asset, version.data_version)
    if catalog.has_batch(own):
        write_own = False
    elif catalog.has_batch(repair_batch_id(asset, version.data_version)):
        write_own = True  # recorded by a repair, which cannot derive the asset's own rows
    else:  # no batch of this version: unknown, or recorded before own batches existed
        write_own = not catalog.query("SELECT 1 FROM asset_versions WHERE asset = ? AND data_version = ? LIMIT 1",
                                      [asset, version.data_version]).height
    if facts:
        rows["run_facts"] = [{"asset": asset, "data_version": version.data_version, "run_id": context.run.run_id,
                              "fact": k, "value": v, "recorded_at": created} for k, v in sorted(facts.items())]
    written = None
    if write_own:
        fault_point("catalog.before_own_batch")
        own_rows = {**rows, "dataset_stats": stat_rows(asset, version.data_version, version.stats),
                    **catalog_rows(version)}
        written = catalog.append(own_rows, batch_id=own)  # None: another run recorded this version first
    if written is None:
        catalog.append(rows)
    try:  # keep catalog.duckdb's views usable for outside tools; never fail a run over it
        catalog.ensure_views()
    except Exception as exc:  # e.g. someone holds catalog.duckdb open for writing
        context.log.warning(f"could not refresh views in {catalog.db_path}: {exc}")

    return dg.MaterializeResult(
        data_version=dg.DataVersion(version.data_version),
        metadata={
            "path": dg.MetadataValue.path(str(version.location)),
            "data_version": version.data_version,
            "code_version": code_version,
            "fingerprint": fingerprint,
            "cache_hit": version.cache_hit,
            "rows": dg.MetadataValue.int(version.manifest.get("rows") or 0),
            "bytes": dg.MetadataValue.int(version.bytes),
            "upstream": dg.MetadataValue.json(dict(upstream)),
            **{f"run.{k}": v for k, v in sorted(facts.items())},
            **metadata(version),
        },
    )


def _recording_run(build: Callable[[Path], BuildResult], run_id: str, facts: dict[str, float]):
    """``build``, timed, with its run facts written to the run record (``_run/facts.json``, outside the
    data version) and collected into ``facts`` for the catalog and the Dagster metadata."""

    def run(out: Path) -> BuildResult:
        started, t0 = now_utc(), time.perf_counter()
        result = build(out) or BuildResult()
        facts.update(flat_numbers({**result.run_facts, "build_seconds": round(time.perf_counter() - t0, 3)}))
        run_record.write_json(out, run_record.FACTS, {
            "run_id": run_id, "host": socket.gethostname(), "started_at": started.isoformat(),
            **result.run_facts, "build_seconds": facts["build_seconds"]})
        return result

    return run


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
