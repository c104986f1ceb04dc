"""Export stage: onnx_bundle, the deployable package of every model, with blocking parity checks."""


import importlib.util
from functools import partial

import dagster as dg
import polars as pl

from assets.pools import GPU_STEP
from assets.versioned import materialize_versioned, preview_table, upstream_version
from ml.export import build as bundle_build
from ml.export import gates, parity, summary
from ml.export.build import read_latency
from ml.export.bundle import TARBALL, read_manifest
from ml.export.sources import CHECKPOINT_ASSETS, bundle_evaluation
from ml.catalog import check_result_rows
from ml.fsutil import source_digest
from ml.store import StoredVersion
from resources import ArtifactStoreResource, CatalogResource
from resources.dagster_config import dagster_config_from_dataclass

# every module whose logic decides the bundle's content or its checks (ml.gnn's import torch: found, not imported)
CODE = ("bundle", "build", "tarball", "to_onnx", "quantize", "int4", "parity", "sources", "metrics", "gates", "latency")


def _module_file(name: str) -> str:
    """A module's source file without importing it (ml.gnn's modules import torch: loading the code
    location, and a cached step, must not)."""
    return importlib.util.find_spec(name).origin

CHECKS, INT4_CHECKS = gates.CHECKS, gates.INT4_CHECKS


ParityThresholds = dagster_config_from_dataclass(parity.Thresholds, "ParityThresholds", descriptions={
    "fp32_max_abs_diff": "ORT fp32 vs PyTorch: max absolute difference of logits / embeddings.",
    "int8_ranker_top1_agreement": "GNN: share of queries whose top-ranked candidate is the same in INT8 and PyTorch.",
    "int8_ranker_rank_correlation": "GNN: mean Spearman correlation of the candidate order per query.",
    "int8_token_agreement": "NER: tag argmax agreement over the real tokens.",
    "int4_lm_top1_agreement": "int4 LM: top-1 next-token agreement with PyTorch fp32 on the sample prompts.",
    "int4_lm_max_logit_diff": "int4 LM: largest |logit difference| to PyTorch fp32 over every sample and vocabulary "
                              "entry."})


class OnnxBundleConfig(dagster_config_from_dataclass(bundle_build.BundleConfig, "OnnxBundleFields", descriptions={
        "max_length": "Tokens per parity sample at most (also capped by the model's positions).",
        "samples": "Real texts per model for the parity samples (validation split of its dataset).",
        "per_channel": "INT8 weight scales: 'auto' (build both, keep the closer to PyTorch), 'on' or 'off'.",
        "quantize_embeddings": "Embedding tables (Gather) INT8 ('on') or fp32 ('off'); 'auto' builds both, keeps the "
                               "closer to PyTorch.",
        "threads": "Threads for torch and ORT alike when timing (0: every core this process may use).",
        "int4": "Causal LMs: also model.int4.onnx (MatMulNBits weight-only) with its own gate <name>_int4_parity.",
        "int4_block_size": "Weights per int4 quantization block (a power of two >= 16).",
        "int4_accuracy_level": "MatMulNBits accuracy_level: 0 = ORT's default (fp32 compute), 4 = int8 activations.",
        "int4_embeddings": "The int4 model's embedding table: 'int8', 'fp32', or 'auto' (INT8 when that passes the "
                           "int4 gate)."},
        only=[f for f in bundle_build.BundleConfig.__dataclass_fields__ if f != "thresholds"])):
    """onnx_bundle's run config: the fields of ml/export BundleConfig, with its parity thresholds."""

    thresholds: ParityThresholds = ParityThresholds()

    def to_ml(self) -> bundle_build.BundleConfig:
        d = self.model_dump()
        d["latency_batches"] = tuple(d["latency_batches"])
        d["thresholds"] = parity.Thresholds(**d["thresholds"])
        return bundle_build.BundleConfig(**d)


def _refuse_failed_inputs(catalog, store, upstream: dict[str, str]) -> None:
    bad = gates.failed_inputs(catalog, store, upstream)
    if bad:
        raise dg.Failure(f"refusing to export checkpoints whose blocking checks failed: {'; '.join(bad)}")


def _evaluation(context: dg.AssetExecutionContext, store, upstream: dict[str, str]) -> dict | None:
    """The held-out test figures of exactly these checkpoints (the latest model_evaluation version, when it
    measured the same model versions), for the bundle manifest; None when there is none."""
    if context.instance.get_latest_materialization_event(dg.AssetKey("model_evaluation")) is None:
        return None
    return bundle_evaluation(upstream_version(context, store, "model_evaluation"), upstream, warn=context.log.warning)


def _check_results(version: StoredVersion, run_id: str) -> tuple[dict, list[dg.AssetCheckResult]]:
    """(catalog check_results rows, Dagster check results) of the bundle's blocking checks."""
    found = gates.outcomes(version.path)
    rows = {"check_results": check_result_rows("onnx_bundle", version.data_version, run_id, gates.catalog_checks(found))}
    return rows, [dg.AssetCheckResult(
        check_name=o.check_name, passed=o.passed, severity=dg.AssetCheckSeverity.ERROR, description=o.description,
        metadata=o.metadata if o.check_name in CHECKS.values() else {"details": dg.MetadataValue.json(o.details)})
        for o in found]


def _metadata(version: StoredVersion) -> dict:
    manifest = read_manifest(version.path)
    latency = summary.latency_rows(read_latency(version.path))  # a run fact: this version's first build
    tar = next(f for f in version.manifest["files"] if f["path"] == TARBALL)
    return {
        "models": preview_table(pl.DataFrame(summary.model_rows(manifest))),
        "parity_passed": manifest["parity"]["passed"],
        "bundle": dg.MetadataValue.path(str(version.path / TARBALL)),
        "bundle_sha256": tar["sha256"],
        "raw_docs": ", ".join(manifest["lineage"]["raw_docs"]) or "(not reached)",
        **({"latency_ms": preview_table(pl.DataFrame(latency))} if latency else {}),
    }


@dg.asset(
    group_name="export",
    deps=[*CHECKPOINT_ASSETS, "model_evaluation"],  # the manifest carries the test figures of its models
    code_version=source_digest(*(_module_file(f"ml.export.{m}") for m in CODE),
                               *(_module_file(f"ml.gnn.{m}") for m in ("export", "data", "model")), __file__),
    kinds={"onnx"},
    **GPU_STEP,  # pool gpu, Celery queue gpu
    check_specs=[dg.AssetCheckSpec(check, asset="onnx_bundle", blocking=True,
                                   description=f"{name}: ORT fp32 and INT8 outputs match PyTorch on the stored samples")
                 for name, check in CHECKS.items()]
    + [dg.AssetCheckSpec(check, asset="onnx_bundle", blocking=True,
                         description=f"{name}: int4 weight-only model (MatMulNBits): top-1 next-token agreement and "
                         "max |logit difference| to PyTorch fp32 on the sample prompts; a model that cannot be "
                         "quantized fails with the reason")
       for name, check in INT4_CHECKS.items()],
    description="fp32 + INT8 ONNX of every model, int4 (MatMulNBits) of the LMs (LM with its LoRA merged, DPO-aligned LM, embedding with "
    "pooling, relation classifier, GNN ranker, NER tagger), parity report, latency and size figures, manifest with lineage down to raw_docs, and a "
    "verifiable bundle.tar.gz.",
)
def onnx_bundle(
    context: dg.AssetExecutionContext, config: OnnxBundleConfig,
    store: ArtifactStoreResource, catalog: CatalogResource,
) -> dg.MaterializeResult:
    st, cat = store.get(), catalog.get()
    upstream = {a: upstream_version(context, st, a).data_version for a in CHECKPOINT_ASSETS}
    evaluation = _evaluation(context, st, upstream)
    _refuse_failed_inputs(cat, st, upstream)
    cfg = config.to_ml()
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key)

    producer = {"asset": "onnx_bundle", "code_version": code_version, "upstream": upstream}
    build = partial(bundle_build.build_onnx_bundle, st, upstream, cfg=cfg, producer=producer, evaluation=evaluation,
                    log=context.log.info)
    result = materialize_versioned(
        context, store=st, catalog=cat, config=config.model_dump(), build=build,
        upstream={**upstream, **({"model_evaluation": evaluation["data_version"]} if evaluation else {})},
        catalog_rows=lambda v: _check_results(v, context.run.run_id)[0], metadata=_metadata,
    )
    version = st.get("onnx_bundle", result.data_version.value)
    return dg.MaterializeResult(data_version=result.data_version, metadata=result.metadata,
                                check_results=_check_results(version, context.run.run_id)[1])
