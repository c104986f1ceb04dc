"""Export stage: onnx_bundle, the deployable package of every model, with blocking parity checks."""


import json
from pathlib import Path

import dagster as dg
import polars as pl

import ml.export.bundle as B
import ml.export.export as E
import ml.export.parity as P
import ml.export.quantize as Q
import ml.export.sources as S
import ml.gnn.data as GD
import ml.gnn.export as G
import ml.gnn.model as GM
from assets.versioned import materialize_versioned, preview_table, upstream_version
from ml.catalog import check_result_rows
from ml.fsutil import source_digest
from ml.quality.gate import failed_blocking_checks
from ml.store import BuildResult, StoredVersion
from resources import ArtifactStoreResource, CatalogResource

T = P.Thresholds
CHECKS = {name: f"{name}_parity" for name in S.COMPONENTS}  # lm_, embedding_, relation_, gnn_, ner_, dpo_parity


class ParityThresholds(dg.Config):
    fp32_max_abs_diff: float = T.fp32_max_abs_diff
    """ORT fp32 vs PyTorch: max absolute difference of logits / embeddings."""
    int8_embedding_mean_cosine: float = T.int8_embedding_mean_cosine
    int8_embedding_min_cosine: float = T.int8_embedding_min_cosine
    int8_lm_top1_agreement: float = T.int8_lm_top1_agreement
    int8_classifier_agreement: float = T.int8_classifier_agreement
    int8_ranker_top1_agreement: float = T.int8_ranker_top1_agreement
    """GNN: share of queries whose top-ranked candidate is the same in INT8 and PyTorch."""
    int8_ranker_rank_correlation: float = T.int8_ranker_rank_correlation
    """GNN: mean Spearman correlation of the candidate order per query."""
    int8_token_agreement: float = T.int8_token_agreement
    """NER: tag argmax agreement over the real tokens."""


class OnnxBundleConfig(dg.Config):
    opset: int = B.BundleConfig.opset
    max_length: int = B.BundleConfig.max_length
    """Tokens per parity sample at most (also capped by the model's positions)."""
    samples: int = B.BundleConfig.samples
    """Real texts per model for the parity samples (validation split of its dataset)."""
    skip_quantization: bool = B.BundleConfig.skip_quantization
    per_channel: str = B.BundleConfig.per_channel
    """INT8 weight scales: 'auto' (build both, keep the closer to PyTorch), 'on' or 'off'."""
    quantize_embeddings: str = B.BundleConfig.quantize_embeddings
    """Embedding tables (Gather) INT8 ('on') or fp32 ('off'); 'auto' builds both, keeps the closer to PyTorch."""
    reduce_range: bool = B.BundleConfig.reduce_range
    measure_latency: bool = B.BundleConfig.measure_latency
    latency_runs: int = B.BundleConfig.latency_runs
    latency_seq: int = B.BundleConfig.latency_seq
    latency_batches: list[int] = list(B.BundleConfig.latency_batches)
    threads: int = B.BundleConfig.threads
    """Threads for torch and ORT alike when timing (0: every core this process may use)."""
    thresholds: ParityThresholds = ParityThresholds()

    def to_ml(self) -> B.BundleConfig:
        d = self.model_dump()
        d["latency_batches"] = tuple(d["latency_batches"])
        d["thresholds"] = P.Thresholds(**d["thresholds"])
        return B.BundleConfig(**d)


def _refuse_failed_inputs(catalog, store, upstream: dict[str, str]) -> None:
    inputs = dict(upstream)
    base = store.get("lora_adapter", upstream["lora_adapter"]).manifest.get("upstream", {}).get("lm_checkpoint")
    if base:
        inputs["lm_checkpoint"] = base
    bad = [f"{asset}@{version}: {f['check_name']}" for asset, version in sorted(inputs.items())
           for f in failed_blocking_checks(catalog, asset, version)]
    if bad:
        raise dg.Failure(f"refusing to export checkpoints whose blocking checks failed: {'; '.join(bad)}")


def _parity(version: StoredVersion) -> dict:
    return json.loads((version.path / B.BUNDLE_DIR / B.PARITY).read_text("utf-8"))


def _check_details(per_precision: dict) -> dict:
    return {prec: {"passed": r["passed"], "problems": r["problems"],
                   **{c["metric"]: c["value"] for c in r["criteria"]}} for prec, r in per_precision.items()}


def _check_rows(version: StoredVersion, run_id: str) -> dict:
    report = _parity(version)
    return {"check_results": check_result_rows("onnx_bundle", version.data_version, run_id, [
        (CHECKS[name], all(r["passed"] for r in per.values()), "ERROR", json.dumps(_check_details(per), sort_keys=True))
        for name, per in sorted(report["models"].items())])}


def _check_results(version: StoredVersion) -> list[dg.AssetCheckResult]:
    report = _parity(version)["models"]
    out = []
    for name, check in CHECKS.items():
        per = report.get(name)
        if per is None:
            out.append(dg.AssetCheckResult(check_name=check, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                           description=f"no parity report for {name} in the bundle"))
            continue
        meta = {f"{prec}.{c['metric']}": float(c["value"]) for prec, r in per.items()
                for c in r["criteria"] if c["value"] is not None}
        problems = [f"{prec}: {p}" for prec, r in per.items() for p in r["problems"]]
        out.append(dg.AssetCheckResult(
            check_name=check, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(problems) or f"{name}: {' and '.join(per)} parity within thresholds",
            metadata={**meta, "precisions": ", ".join(per)},
        ))
    return out


def _metadata(version: StoredVersion) -> dict:
    manifest = json.loads((version.path / B.BUNDLE_DIR / B.MANIFEST).read_text("utf-8"))
    models, latency = [], []
    for name, m in manifest["models"].items():
        int8 = m["parity"].get("int8", {})
        models.append({
            "model": name, "kind": m["kind"], "parameters": m["parameters"],
            "fp32_MB": round(m["bytes"]["fp32"] / 1e6, 3),
            "int8_MB": round(m["bytes"]["int8"] / 1e6, 3) if "int8" in m["bytes"] else None,
            "int8_ratio": m["bytes"].get("int8_ratio"),
            "fp32_max_abs_diff": m["parity"]["fp32"]["max_abs_diff"],
            "int8_cosine_mean": int8.get("cosine_mean"), "int8_argmax_agreement": int8.get("argmax_agreement"),
            "int8_variant": (m["quantization"] or {}).get("chosen"),
            "parity": "pass" if all(p["passed"] for p in m["parity"].values()) else "FAIL",
        })
        for shape, row in m["latency_ms"].items():
            latency.append({"model": name, "shape": shape, **{e: row.get(e) for e in B.ENGINES},
                            "int8_speedup_vs_torch": round(row["torch_fp32"] / row["ort_int8"], 2) if row.get("ort_int8") else None})
    tar = next(f for f in version.manifest["files"] if f["path"] == B.TARBALL)
    out = {
        "models": preview_table(pl.DataFrame(models)),
        "parity_passed": manifest["parity"]["passed"],
        "bundle": dg.MetadataValue.path(str(version.path / B.TARBALL)),
        "bundle_sha256": tar["sha256"],
        "raw_docs": ", ".join(manifest["lineage"]["raw_docs"]) or "(not reached)",
    }
    if latency:
        out["latency_ms"] = preview_table(pl.DataFrame(latency))
    return out


@dg.asset(
    group_name="export",
    deps=list(S.CHECKPOINT_ASSETS),
    code_version=source_digest(*(m.__file__ for m in (E, Q, P, S, B, G, GD, GM)), __file__),
    kinds={"onnx"},
    pool="gpu",
    check_specs=[dg.AssetCheckSpec(check, asset="onnx_bundle", blocking=True,
                                   description=f"{name}: ORT fp32 and INT8 outputs match PyTorch on the stored samples")
                 for name, check in CHECKS.items()],
    description="fp32 + INT8 ONNX of every model (LM with its LoRA merged, DPO-aligned LM, embedding with "
    "pooling, relation classifier, GNN ranker, NER tagger), parity report, latency and size figures, manifest with lineage down to raw_docs, and a "
    "verifiable bundle.tar.gz.",
)
def onnx_bundle(
    context: dg.AssetExecutionContext, config: OnnxBundleConfig,
    store: ArtifactStoreResource, catalog: CatalogResource,
) -> dg.MaterializeResult:
    st, cat = store.get(), catalog.get()
    upstream = {a: upstream_version(context, st, a).data_version for a in S.CHECKPOINT_ASSETS}
    _refuse_failed_inputs(cat, st, upstream)
    cfg = config.to_ml()
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key)

    def build(out: Path) -> BuildResult:
        models = S.resolve_models(st, upstream)
        for m in models:
            m.texts, m.cut_samples, m.provenance["samples"] = S.sample_texts(
                st, m.provenance["asset"], m.provenance["data_version"], m.kind, cfg.samples, m.tokenizer_dir)
        manifest = B.build_bundle(
            models, out, cfg, lineage=S.walk_lineage(st, upstream),
            producer={"asset": "onnx_bundle", "code_version": code_version, "upstream": upstream},
            log=context.log.info,
        )
        return BuildResult(stats=B.bundle_stats(manifest), rows=len(models))

    result = materialize_versioned(
        context, store=st, catalog=cat, config=config.model_dump(), upstream=upstream, build=build,
        catalog_rows=lambda v: _check_rows(v, context.run.run_id), metadata=_metadata,
    )
    version = st.get("onnx_bundle", result.data_version.value)
    return dg.MaterializeResult(data_version=result.data_version, metadata=result.metadata,
                                check_results=_check_results(version))
