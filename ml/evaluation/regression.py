"""The regression gate: each model's test metrics against the last promoted bundle's models.

A metric regresses when it got worse by more than ``tolerance`` x |baseline|; a model or metric without a
baseline is ``no_baseline`` and does not fail. Where the baseline comes from: DESIGN.md, "Module notes".
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ml.evaluation import higher_is_better

SCHEMA = {"model_asset": pl.String, "metric": pl.String, "baseline_version": pl.String, "baseline": pl.Float64,
          "current_version": pl.String, "current": pl.Float64, "change": pl.Float64, "allowed": pl.Float64,
          "status": pl.String}


def promoted_models(catalog) -> dict[str, str]:
    """model asset -> model version of the latest promotion of each bundle component."""
    rows = catalog.query(
        """SELECT model_version FROM (
             SELECT *, row_number() OVER (PARTITION BY component ORDER BY promoted_at DESC) AS rn FROM promotions)
           WHERE rn = 1""")
    out: dict[str, str] = {}
    for mv in rows["model_version"].to_list():
        asset, _, version = (mv or "").partition("@")
        if asset and version and version != "?":
            out[asset] = version
    return out


def baseline_results(catalog, baselines: dict[str, str], dataset_versions: dict[str, str] | None = None
                     ) -> pl.DataFrame:
    """The recorded test figures of each baseline model version: model_asset, model_version, metric, value."""
    frames = []
    for asset, version in sorted(baselines.items()):
        df = catalog.query(
            """SELECT model_asset, model_version, dataset_version, metric, value, created_at FROM eval_results
               WHERE model_asset = ? AND model_version = ? AND split = 'test'""", [asset, version])
        if df.height:
            same = (dataset_versions or {}).get(asset)
            df = df.with_columns(pref=(pl.col("dataset_version") == same).fill_null(False).cast(pl.Int8))
            df = df.sort(["metric", "pref", "created_at"], descending=[False, True, True]).unique(
                "metric", keep="first", maintain_order=True)
            frames.append(df.select("model_asset", "model_version", "metric", "value"))
    if not frames:
        return pl.DataFrame(schema={"model_asset": pl.String, "model_version": pl.String, "metric": pl.String,
                                    "value": pl.Float64})
    return pl.concat(frames)


def compare(current: list[dict[str, Any]], baseline: pl.DataFrame, tolerance: float) -> pl.DataFrame:
    """``current``: rows {model_asset, model_version, metric, value}; one output row per current metric."""
    base = {(r["model_asset"], r["metric"]): r for r in baseline.iter_rows(named=True)}
    rows = []
    for r in current:
        b = base.get((r["model_asset"], r["metric"]))
        if b is None or b["value"] is None:
            rows.append({"model_asset": r["model_asset"], "metric": r["metric"], "baseline_version": None,
                         "baseline": None, "current_version": r["model_version"], "current": r["value"],
                         "change": None, "allowed": None, "status": "no_baseline"})
            continue
        change = r["value"] - b["value"]
        worse = -change if higher_is_better(r["metric"]) else change
        allowed = tolerance * abs(b["value"])
        nan = r["value"] != r["value"]
        rows.append({"model_asset": r["model_asset"], "metric": r["metric"], "baseline_version": b["model_version"],
                     "baseline": b["value"], "current_version": r["model_version"], "current": r["value"],
                     "change": change, "allowed": allowed,
                     "status": "regressed" if nan or worse > allowed else "ok"})
    return pl.DataFrame(rows, schema=SCHEMA)
