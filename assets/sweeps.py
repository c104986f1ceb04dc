"""Sweeps, Dagster-native: model_sweep (group experiments) is a graph sweep_points -> sweep_train (fan-out, pool gpu) -> sweep_rank.

Each point is a versioned checkpoint of the swept asset with the same fingerprint rule as a materialization
of it, so a point equal to the asset's config is its cache hit. Not part of full_pipeline (``sweep_job``).
More: DESIGN.md, "Experiments" and "Module notes".
"""

import json
import warnings
from pathlib import Path
from typing import Any, Optional

import dagster as dg
import polars as pl

import ml.sweeps as sweeps
from assets import training
from assets.pools import CELERY_QUEUE_TAG, GPU_POOL, GPU_QUEUE
from assets.versioned import preview_table, upstream_version
from ml.catalog import now_utc
from ml.fsutil import source_digest
from ml.store import BuildResult, compute_fingerprint
from resources import ArtifactStoreResource, CatalogResource, TorchDevice

SWEEPABLE = ("lm_checkpoint", "lora_adapter", "embedding_checkpoint", "relation_checkpoint", "gnn_checkpoint",
             "ner_checkpoint")
CODE_VERSION = source_digest(sweeps.__file__, __file__, length=8) + training.CODE_VERSION


class SweepConfig(dg.Config):
    name: str
    """The sweep's name: its rows in sweep_results, and what train.from_sweep names."""
    asset: str = "lm_checkpoint"
    """The training asset swept (its inputs are the current versions of that asset's deps)."""
    base: dict[str, Any] = {}
    """The asset's settings every point starts from (same fields as its config section)."""
    grid: dict[str, list[Any]] = {}
    """Dotted settings path -> values; every combination is a point."""
    random: Optional[dict[str, Any]] = None
    """{n, seed, params: {path: [choices] | {low, high, log}}}: n seeded draws instead of a grid."""
    metric: str = "loss"
    """Validation metric that ranks the points."""
    mode: Optional[str] = None
    """min | max (default: min for loss/perplexity, else max)."""

    def settings(self) -> sweeps.SweepSettings:
        return sweeps.SweepSettings.model_validate(self.model_dump())


class _PointContext:
    """What train_checkpoint reads of its context, for one sweep point of ``asset`` inside sweep_train."""

    def __init__(self, op_context: dg.OpExecutionContext, asset: str):
        self.asset_key = dg.AssetKey(asset)
        self.assets_def = getattr(training, asset)
        self.run = op_context.run
        self.log = op_context.log
        self.instance = op_context.instance
        self.resources = op_context.resources


class _Settings:
    def __init__(self, settings: dict[str, Any]):
        self._s = settings

    def model_dump(self) -> dict[str, Any]:
        return dict(self._s)


@dg.op(out=dg.DynamicOut(dict), description="The sweep's points (grid or seeded random draws), each validated.")
def sweep_points(context: dg.OpExecutionContext, config: SweepConfig):
    try:
        sw = config.settings()
        pts = sweeps.points(sw)
    except ValueError as exc:
        raise dg.Failure(f"model_sweep config: {exc}") from exc
    if sw.asset not in SWEEPABLE:
        raise dg.Failure(f"model_sweep config: {sw.asset} cannot be swept here; sweepable: {SWEEPABLE}")
    context.log.info(f"sweep {sw.name}: {len(pts)} points of {sw.asset}, ranked by val {sw.metric} ({sw.direction})")
    for p in pts:
        yield dg.DynamicOutput({**p, "sweep": sw.name, "asset": sw.asset, "metric": sw.metric,
                                "direction": sw.direction}, mapping_key=p["point"])


@dg.op(pool=GPU_POOL, tags={CELERY_QUEUE_TAG: GPU_QUEUE},  # like the training assets (assets/pools.py)
       description="Train one point: a versioned checkpoint of the swept asset, with its checks.")
def sweep_train(context: dg.OpExecutionContext, point: dict, store: ArtifactStoreResource,
                catalog: CatalogResource, torch_device: TorchDevice) -> dict:
    asset = point["asset"]
    st = store.get()
    deps = sorted(k.to_user_string() for k in getattr(training, asset).asset_deps[dg.AssetKey(asset)])
    inputs = {name: upstream_version(context, st, name) for name in deps}
    context.log.info(f"sweep {point['sweep']} {point['point']}: {sweeps.params_json(point['params'])}")
    result = training.train_checkpoint(_PointContext(context, asset), _Settings(point["settings"]), inputs, store,
                                       catalog, torch_device)
    version = st.get(asset, result.data_version.value)
    summary = json.loads((version.path / "summary.json").read_text("utf-8"))
    checks = {c.check_name: bool(c.passed) for c in result.check_results or []}
    return {**{k: point[k] for k in ("sweep", "asset", "point", "params", "metric", "direction")},
            "data_version": version.data_version, "val": summary.get("val") or {}, "steps": summary.get("steps"),
            "checks_passed": all(checks.values()), "inputs": {n: v.data_version for n, v in inputs.items()}}


@dg.op(description="Rank the points by the sweep's validation metric: a model_sweep version and sweep_results rows.")
def sweep_rank(context: dg.OpExecutionContext, results: list, store: ArtifactStoreResource,
               catalog: CatalogResource):
    st, cat = store.get(), catalog.get()
    first = results[0]
    ranked = sweeps.rank(sorted(results, key=lambda r: r["point"]), first["metric"], first["direction"])
    frame = pl.DataFrame([{"rank": r["rank"], "point": r["point"], "params": sweeps.params_json(r["params"]),
                           "metric": r["metric"], "value": r["value"], "model_version": r["data_version"],
                           "checks_passed": r["checks_passed"], "steps": r["steps"]} for r in ranked],
                         schema={"rank": pl.Int64, "point": pl.String, "params": pl.String, "metric": pl.String,
                                 "value": pl.Float64, "model_version": pl.String, "checks_passed": pl.Boolean,
                                 "steps": pl.Int64})
    upstream = {f"{first['asset']}:{r['point']}": r["data_version"] for r in ranked}
    config = {"sweep": first["sweep"], "asset": first["asset"], "metric": first["metric"],
              "direction": first["direction"], "points": {r["point"]: r["params"] for r in ranked}}
    fingerprint = compute_fingerprint("model_sweep", CODE_VERSION, config, upstream)

    def build(out: Path) -> BuildResult:
        frame.write_parquet(out / "results.parquet")
        return BuildResult(stats={"points": len(ranked)}, rows=len(ranked))

    version = st.lookup("model_sweep", fingerprint) or st.put(
        "model_sweep", build, fingerprint=fingerprint, code_version=CODE_VERSION, config=config, upstream=upstream,
        run_id=context.run.run_id)
    created = now_utc()
    rows = {
        "asset_versions": [{"asset": "model_sweep", "data_version": version.data_version, "code_version": CODE_VERSION,
                            "fingerprint": fingerprint, "run_id": context.run.run_id, "created_at": created,
                            "path": str(version.location), "bytes": version.bytes, "rows": len(ranked),
                            "cache_hit": version.cache_hit}],
        "lineage_edges": [{"asset": "model_sweep", "data_version": version.data_version,
                           "upstream_asset": first["asset"], "upstream_version": r["data_version"],
                           "run_id": context.run.run_id, "created_at": created} for r in ranked],
        "sweep_results": [{"sweep": first["sweep"], "data_version": version.data_version, "point": r["point"],
                           "params": sweeps.params_json(r["params"]), "asset": first["asset"],
                           "model_version": r["data_version"], "metric": r["metric"], "value": r["value"],
                           "rank": r["rank"], "best": r["best"], "run_id": context.run.run_id, "created_at": created}
                          for r in ranked],
    }
    cat.append(rows)  # one batch: the ranking of this run appears whole or not at all
    best = ranked[0]
    context.log.info(f"sweep {first['sweep']}: best {best['point']} {sweeps.params_json(best['params'])} "
                     f"{best['metric']} {best['value']}")
    with warnings.catch_warnings():  # Output(data_version=) is marked beta; it is how an op output gets one
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _output(version, frame, best, first)


def _output(version, frame: pl.DataFrame, best: dict, first: dict) -> dg.Output:
    return dg.Output(None, data_version=dg.DataVersion(version.data_version), metadata={
        "ranking": preview_table(frame.with_columns(pl.col("value").round(4))),
        "best": dg.MetadataValue.json({k: best[k] for k in ("point", "params", "value", "data_version")}),
        "path": dg.MetadataValue.path(str(version.location)), "data_version": version.data_version,
        "select_with": f"ops.{first['asset']}.config.train.from_sweep: {first['sweep']}"})


@dg.graph_asset(  # no deps= on graph assets: each point's lineage edges name its inputs in the catalog
    group_name="experiments",
    kinds={"torch"},
    description="A sweep of training settings (grid or random) of one training asset: one versioned checkpoint per "
    "point, trained in parallel by Dagster (DynamicOut, pool gpu), ranked by a validation metric into sweep_results; "
    "train.from_sweep selects the best point for the rest of the pipeline.",
)
def model_sweep():
    return sweep_rank(sweep_points().map(sweep_train).collect())
