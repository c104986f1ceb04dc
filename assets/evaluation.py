"""Evaluation stage: model_evaluation, every model version on its held-out test split.

The metrics (ml/evaluation/) become a version, ``eval_results`` rows, metadata and an MLflow run; the
blocking ``no_regression`` check compares them with the last promoted bundle's models.
"""


import json
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

import ml.evaluation as evaluation
import ml.evaluation.metrics as eval_metrics
import ml.evaluation.regression as regression
from assets.pools import GPU_STEP
from assets.versioned import materialize_versioned, preview_table, upstream_version
from ml.catalog import check_result_rows, now_utc
from ml.fsutil import source_digest
from ml.store import BuildResult, StoredVersion
from resources import ArtifactStoreResource, CatalogResource, TorchDevice

MODELS = tuple(evaluation.TEST_DATA)
REGRESSION = "no_regression"


class ModelEvaluationConfig(dg.Config):
    max_examples: int = 256
    """Test items per model at most (blocks for the LM, prompts for SFT/DPO, pairs, sentences, queries)."""
    tolerance: float = 0.05
    """A metric regresses when it is worse than the promoted model's by more than tolerance x |baseline|."""


def _model_inputs(store, version: StoredVersion) -> dict[str, Path]:
    """The version directories a model version was made from (its manifest's upstream), plus the base LM
    of a LoRA adapter: what its evaluator loads."""
    ups = {name: store.get(name, dv).path for name, dv in (version.manifest.get("upstream") or {}).items()}
    if version.asset == "lora_adapter" and "lm_checkpoint" not in ups:
        raise dg.Failure(f"lora_adapter@{version.data_version} names no lm_checkpoint upstream")
    return ups


def _latest(context: dg.AssetExecutionContext, store, asset: str) -> StoredVersion | None:
    if context.instance.get_latest_materialization_event(dg.AssetKey(asset)) is None:
        return None
    return upstream_version(context, store, asset)


def _results_table(frame: pl.DataFrame) -> dg.TableMetadataValue:
    return preview_table(frame.with_columns(pl.col("value").round(4)), max_chars=60)


@dg.asset(
    group_name="evaluation",
    deps=list(MODELS),
    code_version=source_digest(evaluation.__file__, eval_metrics.__file__, regression.__file__, __file__),
    kinds={"torch"},
    **GPU_STEP,  # pool gpu, Celery queue gpu (runs every model)
    check_specs=[dg.AssetCheckSpec(
        REGRESSION, asset="model_evaluation", blocking=True,
        description="no test metric is worse than the last promoted bundle's model by more than tolerance x "
        "|baseline| (models with no promoted baseline pass)")],
    description="Every model version measured on the test split of its dataset (never seen by training or model "
    "selection): LM perplexity and generations, SFT/DPO exact match and token F1, embedding recall@1/@10 and MRR, "
    "relation accuracy / macro F1 / confusion matrix, GNN MRR / NDCG, NER entity F1; catalog table eval_results.",
)
def model_evaluation(context: dg.AssetExecutionContext, config: ModelEvaluationConfig,
                     store: ArtifactStoreResource, catalog: CatalogResource,
                     torch_device: TorchDevice) -> dg.MaterializeResult:
    st, cat = store.get(), catalog.get()
    models = {a: v for a in MODELS if (v := _latest(context, st, a)) is not None}
    missing = [a for a in MODELS if a not in models]
    if not models:
        raise dg.Failure(f"no model is materialized yet: {missing}")
    for a in missing:
        context.log.warning(f"model_evaluation: {a} has never been materialized; it is left out of this version")
    upstream = {a: v.data_version for a, v in models.items()}
    datasets: dict[str, tuple[str, str]] = {}  # model -> (dataset asset, version)

    def build(out: Path) -> BuildResult:
        from ml.train.device import resolve

        # the torch_device resource's threads and seed (models are evaluated on the CPU: the loaders' device);
        # without it, torch's default threads spin against each other on a busy 2-core machine (25x slower)
        resolve(torch_device.settings())
        results = []
        for asset, v in models.items():
            inputs = _model_inputs(st, v)
            context.log.info(f"evaluating {asset}@{v.data_version} on the test split of {evaluation.TEST_DATA[asset]}")
            try:
                results.append(evaluation.evaluate_model(asset, v.path, inputs, v.manifest.get("config") or {},
                                                         config.max_examples))
            except evaluation.EvaluationError as exc:
                raise dg.Failure(f"{asset}@{v.data_version}: {exc}") from exc
        frame = evaluation.write_output(out, results, upstream)
        return BuildResult(stats={f"{r['asset']}.{r['metric']}": r["value"] for r in frame.iter_rows(named=True)},
                           rows=frame.height)

    for asset, v in models.items():
        ds = evaluation.TEST_DATA[asset]
        datasets[asset] = (ds, (v.manifest.get("upstream") or {}).get(ds, ""))

    def rows(version: StoredVersion) -> dict:
        frame = evaluation.read_results(version.path)
        created = now_utc()
        return {"eval_results": [
            {"asset": "model_evaluation", "data_version": version.data_version, "model_asset": r["asset"],
             "model_version": upstream[r["asset"]], "dataset_asset": r["dataset"],
             "dataset_version": datasets[r["asset"]][1], "split": "test", "metric": r["metric"], "value": r["value"],
             "n": r["n"], "run_id": context.run.run_id, "created_at": created} for r in frame.iter_rows(named=True)]}

    result = materialize_versioned(
        context, store=st, catalog=cat, config=config.model_dump(), upstream=upstream, build=build,
        catalog_rows=rows, metadata=lambda v: _metadata(v, missing))
    version = st.get("model_evaluation", result.data_version.value)
    frame = evaluation.read_results(version.path)

    # the regression gate against the promoted models
    current = [{"model_asset": r["asset"], "model_version": upstream[r["asset"]], "metric": r["metric"],
                "value": r["value"]} for r in frame.iter_rows(named=True)]
    baseline = regression.baseline_results(cat, regression.promoted_models(cat),
                                           {a: d[1] for a, d in datasets.items()})
    cmp = regression.compare(current, baseline, config.tolerance)
    bad = cmp.filter(pl.col("status") == "regressed")
    compared = cmp.filter(pl.col("status") != "no_baseline").height
    details = (f"{bad.height} of {compared} compared metrics regressed by more than {config.tolerance:.0%} of the "
               "promoted model's: " + ", ".join(f"{r['model_asset']}.{r['metric']} {r['baseline']:.4g} -> "
                                               f"{r['current']:.4g}" for r in bad.iter_rows(named=True))
               if bad.height else f"{compared} metrics compared with the promoted models, none regressed "
               f"beyond {config.tolerance:.0%}" + (" (no promoted model yet)" if not compared else ""))
    (context.log.error if bad.height else context.log.info)(f"check {REGRESSION}: {details}")
    cat.append({"check_results": check_result_rows("model_evaluation", version.data_version, context.run.run_id,
                                                   [(REGRESSION, bad.height == 0, "ERROR", details)])})
    cache_hit = result.metadata.get("cache_hit")
    tracked = _track(context, st.home, version, frame, config, bool(getattr(cache_hit, "value", cache_hit)))
    return dg.MaterializeResult(
        data_version=result.data_version,
        metadata={**result.metadata, "regression": preview_table(cmp.with_columns(pl.col(pl.Float64).round(4))),
                  "mlflow": dg.MetadataValue.json(tracked)},
        check_results=[dg.AssetCheckResult(
            check_name=REGRESSION, passed=bad.height == 0, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"details": details, "tolerance": config.tolerance, "compared": compared})])


def _metadata(version: StoredVersion, missing: list[str]) -> dict[str, Any]:
    from ml.train.plots import data_uri_markdown

    frame = evaluation.read_results(version.path)
    md: dict[str, Any] = {"results": _results_table(frame), "not_materialized": dg.MetadataValue.json(missing)}
    index = json.loads((version.path / "index.json").read_text("utf-8"))
    for asset, info in sorted(index.items()):
        for table in info["tables"]:
            md[f"{asset}.{table}"] = preview_table(pl.read_parquet(version.path / f"{asset}.{table}.parquet").head(12),
                                                   max_chars=80)
        for image in info["images"]:
            png = (version.path / f"{asset}.{image}.png").read_bytes()
            md[f"{asset}.{image}_image"] = dg.MetadataValue.md(data_uri_markdown(png, f"{asset} {image}"))
    return md


def _track(context, home, version: StoredVersion, frame: pl.DataFrame, config: ModelEvaluationConfig,
           cache_hit: bool) -> dict:
    if cache_hit:
        return {"status": "skipped", "why": "cache hit: logged when this version was built"}
    from ml.tracking import log_run

    artifacts = sorted(p for p in version.path.iterdir() if p.suffix in (".png", ".parquet"))
    info = log_run(home, run_name=f"model_evaluation@{version.data_version[:12]}",
                   tags={"asset": "model_evaluation", "data_version": version.data_version,
                         "fingerprint": version.manifest.get("fingerprint"), "dagster_run_id": context.run.run_id,
                         "code_version": version.manifest.get("code_version"), "kind": "evaluation"},
                   params={**config.model_dump(), "models": version.manifest.get("upstream") or {}},
                   metrics=[(f"test/{r['asset']}/{r['metric']}", r["value"], 0) for r in frame.iter_rows(named=True)
                            if r["value"] == r["value"]], artifacts=artifacts)
    if info["status"] == "failed":
        context.log.warning(f"MLflow tracking failed, the materialization goes on: {info['error']}")
    return info
