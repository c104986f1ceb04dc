"""The data-quality checks: one multi-asset check ``<asset>_quality`` per data asset runs that
asset's suite (listed in ``ml/quality/suites.py``) on the version it last materialized, one Dagster
check per expectation; failed blocking ones stop the downstream in the same run.

A result recorded for the same data version and check version (``ml.quality.validate.check_version``)
is reported again instead of validating (no GX import); README "Data-quality gates" has the rest.
"""

from typing import Iterator

import dagster as dg
import polars as pl

from assets.config import dagster_config
from assets.versioned import preview_table, upstream_version
from ml.quality.suite import Thresholds
from ml.quality.suites import SUITES
from ml.quality.validate import check_version, record_results, recorded_results, validate_version
from ml.settings import QualityRules
from resources import ArtifactStoreResource, CatalogResource

def _quality_config(name: str, *fields: str) -> type[dg.Config]:
    return dagster_config(QualityRules, name, only=("sample_rows", *fields))


QualityConfig = _quality_config("QualityConfig")
RawDocsQualityConfig = _quality_config("RawDocsQualityConfig", "quarantine_rate_max")
CleanedChunksQualityConfig = _quality_config("CleanedChunksQualityConfig", "duplicate_rate_max")
TokenizedCorpusQualityConfig = _quality_config("TokenizedCorpusQualityConfig", "val_share_tolerance", "val_share_sigmas")
RelationDatasetQualityConfig = _quality_config("RelationDatasetQualityConfig", "max_label_share")
_CONFIGS: dict[str, type[QualityConfig]] = {
    "raw_docs": RawDocsQualityConfig,
    "cleaned_chunks": CleanedChunksQualityConfig,
    "tokenized_corpus": TokenizedCorpusQualityConfig,
    "relation_dataset": RelationDatasetQualityConfig,
}


def _metadata(r: dict, run_id: str) -> dict:
    md = {
        "data_version": r["data_version"],
        "check_version": r.get("check_version") or "",
        "reused": bool(r.get("reused_from_run")),
        "validated_in_run": r.get("reused_from_run") or run_id,
        "unexpected_count": dg.MetadataValue.int(r["unexpected_count"] or 0),
        "unexpected_percent": dg.MetadataValue.float(float(r["unexpected_percent"] or 0.0)),
        "element_count": dg.MetadataValue.int(r["element_count"] or 0),
    }
    if r["expectation"]:
        md["expectation"] = dg.MetadataValue.json(r["expectation"])
    if r["sample"]:
        try:
            md["failing_rows"] = preview_table(pl.DataFrame(r["sample"], infer_schema_length=None))
        except Exception:  # heterogeneous values: show them as JSON instead
            md["failing_rows"] = dg.MetadataValue.json(r["sample"])
    if r["observed_value"] is not None:
        md["observed_value"] = dg.MetadataValue.json({"value": r["observed_value"]})
    if r["error"]:
        md["error"] = dg.MetadataValue.text(r["error"])
    if r["inputs"]:
        md["inputs"] = dg.MetadataValue.json(r["inputs"])
    if r.get("notes"):
        md["notes"] = dg.MetadataValue.json(r["notes"])
    return md


def _quality_check(asset: str) -> dg.AssetChecksDefinition:
    suite = SUITES[asset]
    config_cls = _CONFIGS.get(asset, QualityConfig)
    specs = [
        dg.AssetCheckSpec(c.name, asset=asset, blocking=c.blocking,
                          description=("" if c.blocking else "(warning) ") + c.description)
        for c in suite.checks
    ]

    @dg.multi_asset_check(
        name=f"{asset}_quality", specs=specs, can_subset=True, compute_kind="great_expectations",
        description=f"Great Expectations suite of {asset} ({suite.prepare.__module__}) on its latest materialized version.",
    )
    def _check(context: dg.AssetCheckExecutionContext, config: config_cls, store: ArtifactStoreResource,
               catalog: CatalogResource) -> Iterator[dg.AssetCheckResult]:
        st = store.get()
        version = upstream_version(context, st, asset)  # the version this asset last materialized
        selected = {k.name for k in context.selected_asset_check_keys}
        thresholds = Thresholds(**config.model_dump())
        cat, cv = catalog.get(), check_version(asset, thresholds)
        results = recorded_results(cat, asset, version.data_version, cv, sorted(selected))
        if results is not None:
            context.log.info(f"{asset}@{version.data_version}: {len(results)} recorded results of check version "
                             f"{cv} reused (validated in run {results[0]['reused_from_run']})")
        else:
            results = validate_version(st, asset, version.data_version, thresholds, checks=selected)
            for r in results:
                r["check_version"] = cv
            record_results(cat, asset, version.data_version, results, context.run.run_id)
        failed = [r["check_name"] for r in results if not r["passed"]]
        if failed:
            context.log.warning(f"{asset}@{version.data_version}: failed checks {failed}")
        for r in results:
            yield dg.AssetCheckResult(
                asset_key=asset, check_name=r["check_name"], passed=bool(r["passed"]),
                severity=dg.AssetCheckSeverity.ERROR if r["severity"] == "ERROR" else dg.AssetCheckSeverity.WARN,
                metadata=_metadata(r, context.run.run_id),
            )

    return _check


QUALITY_CHECKS = [_quality_check(asset) for asset in SUITES]

ALL_CHECKS: list = [*QUALITY_CHECKS]
