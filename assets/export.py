"""Export stage: onnx_bundle, the deployable package of every model, with blocking parity checks."""


import importlib.util
import json
from pathlib import Path

import dagster as dg
import polars as pl

import ml.export.bundle as B
import ml.export.export as E
import ml.export.int4 as I4
import ml.export.metrics as M
import ml.export.parity as P
import ml.export.quantize as Q
import ml.export.sources as S
from assets.pools import GPU_STEP
from assets.versioned import materialize_versioned, preview_table, upstream_version
from ml.catalog import check_result_rows
from ml.fsutil import source_digest
from ml.quality.gate import failed_blocking_checks
from ml.store import BuildResult, StoredVersion
from resources import ArtifactStoreResource, CatalogResource


def _module_file(name: str) -> str:
    """A module's source file without importing it (ml.gnn's modules import torch: loading the code
    location, and a cached step, must not)."""
    return importlib.util.find_spec(name).origin

T = P.Thresholds
CHECKS = {name: f"{name}_parity" for name in S.COMPONENTS}  # lm_, embedding_, relation_, gnn_, ner_, dpo_parity
# the int4 gate of each LM (lm_int4_parity, dpo_int4_parity): its own blocking check beside <name>_parity
INT4_CHECKS = {name: f"{name}_int4_parity" for name, (_, kind) in S.COMPONENTS.items() if kind in I4.KINDS}


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
    int4_lm_top1_agreement: float = T.int4_lm_top1_agreement
    """int4 LM: top-1 next-token agreement with PyTorch fp32 on the sample prompts."""
    int4_lm_max_logit_diff: float = T.int4_lm_max_logit_diff
    """int4 LM: largest |logit difference| to PyTorch fp32 over every sample and vocabulary entry."""


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
    int4: bool = B.BundleConfig.int4
    """Causal LMs: also model.int4.onnx (MatMulNBits weight-only) with its own gate <name>_int4_parity."""
    int4_block_size: int = B.BundleConfig.int4_block_size
    """Weights per int4 quantization block (a power of two >= 16)."""
    int4_symmetric: bool = B.BundleConfig.int4_symmetric
    int4_accuracy_level: int = B.BundleConfig.int4_accuracy_level
    """MatMulNBits accuracy_level: 0 = ORT's default (fp32 compute), 4 = int8 activations."""
    int4_embeddings: str = B.BundleConfig.int4_embeddings
    """The int4 model's embedding table: 'int8', 'fp32', or 'auto' (INT8 when that passes the int4 gate)."""

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


def _evaluation(context: dg.AssetExecutionContext, store, upstream: dict[str, str]) -> dict | None:
    """The held-out test figures of exactly these checkpoints (the latest model_evaluation version, when it
    measured the same model versions), for the bundle manifest; None when there is none."""
    if context.instance.get_latest_materialization_event(dg.AssetKey("model_evaluation")) is None:
        return None
    ev = upstream_version(context, store, "model_evaluation")
    measured = ev.manifest.get("upstream") or {}
    stale = {a: v for a, v in upstream.items() if a in measured and measured[a] != v}
    if stale or not set(measured) & set(upstream):
        context.log.warning(f"model_evaluation@{ev.data_version} measured other model versions ({stale}); the "
                            "bundle manifest carries no evaluation")
        return None
    frame = pl.read_parquet(ev.path / "results.parquet")
    models: dict[str, dict] = {}
    for r in frame.iter_rows(named=True):
        models.setdefault(r["asset"], {"dataset": r["dataset"], "split": "test", "metrics": {}})["metrics"][
            r["metric"]] = {"value": r["value"], "n": r["n"]}
    return {"asset": "model_evaluation", "data_version": ev.data_version, "models": models}


def _parity(version: StoredVersion) -> dict:
    return json.loads((version.path / B.BUNDLE_DIR / B.PARITY).read_text("utf-8"))


def _check_details(per_precision: dict) -> dict:
    return {prec: {"passed": r["passed"], "problems": r["problems"],
                   **{c["metric"]: c["value"] for c in r["criteria"]}} for prec, r in per_precision.items()}


def _split_int4(per: dict) -> tuple[dict, dict | None]:
    """(fp32 + INT8 results: <name>_parity, the int4 result: <name>_int4_parity)."""
    return {p: r for p, r in per.items() if p != "int4"}, per.get("int4")


def _int4_outcome(name: str, int4: dict | None, q4: dict | None) -> tuple[bool, str, dict]:
    """(passed, description, details) of <name>_int4_parity from the parity result and the manifest entry."""
    q4 = q4 or {"status": "missing", "reason": "the bundle manifest has no int4 entry (built before int4 existed)"}
    details = {"status": q4.get("status"), "reason": q4.get("reason"),
               "block_size": q4.get("block_size"), "quantized_nodes": q4.get("quantized"),
               "not_quantized": I4.summary_reasons(q4)}
    if q4.get("status") == "off":
        return True, f"{name}: int4 off in the bundle config, nothing to gate", details
    if int4 is None:
        return False, f"{name}: no int4 parity result ({q4.get('status')}: {q4.get('reason')})", details
    details.update(_check_details({"int4": int4})["int4"])
    figures = ", ".join(f"{c['metric']} {c['value']:.4g} ({c['op']} {c['threshold']:g})" for c in int4["criteria"]
                        if c["value"] is not None)
    return int4["passed"], "; ".join(int4["problems"]) or f"{name}: int4 within thresholds: {figures}", details


def _check_rows(version: StoredVersion, run_id: str) -> dict:
    report = _parity(version)
    manifest = json.loads((version.path / B.BUNDLE_DIR / B.MANIFEST).read_text("utf-8"))
    rows = []
    for name, per in sorted(report["models"].items()):
        main, int4 = _split_int4(per)
        details = _check_details(main)
        q4 = manifest["models"].get(name, {}).get("quantization_int4")
        if name not in INT4_CHECKS and q4:  # why this model has no int4 file
            details["int4"] = {"status": q4.get("status"), "reason": q4.get("reason")}
        rows.append((CHECKS[name], all(r["passed"] for r in main.values()), "ERROR", json.dumps(details, sort_keys=True)))
        if name in INT4_CHECKS:
            ok, _, d4 = _int4_outcome(name, int4, q4)
            rows.append((INT4_CHECKS[name], ok, "ERROR", json.dumps(d4, sort_keys=True)))
    return {"check_results": check_result_rows("onnx_bundle", version.data_version, run_id, rows)}


def _check_results(version: StoredVersion) -> list[dg.AssetCheckResult]:
    report = _parity(version)["models"]
    manifest = json.loads((version.path / B.BUNDLE_DIR / B.MANIFEST).read_text("utf-8"))
    out = []
    for name, check in INT4_CHECKS.items():
        if name not in report:
            out.append(dg.AssetCheckResult(check_name=check, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                           description=f"no parity report for {name} in the bundle"))
            continue
        ok, description, d4 = _int4_outcome(name, report[name].get("int4"),
                                            manifest["models"].get(name, {}).get("quantization_int4"))
        out.append(dg.AssetCheckResult(
            check_name=check, passed=ok, severity=dg.AssetCheckSeverity.ERROR, description=description,
            metadata={"details": dg.MetadataValue.json(d4)}))
    for name, check in CHECKS.items():
        per = report.get(name)
        if per is None:
            out.append(dg.AssetCheckResult(check_name=check, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                           description=f"no parity report for {name} in the bundle"))
            continue
        per = _split_int4(per)[0]
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
            "int4_MB": round(m["bytes"]["int4"] / 1e6, 3) if "int4" in m["bytes"] else None,
            "int4_argmax_agreement": m["parity"].get("int4", {}).get("argmax_agreement"),
            "int4_max_logit_diff": m["parity"].get("int4", {}).get("max_abs_diff"),
            "int4": (m.get("quantization_int4") or {}).get("status"),
            "val": json.dumps((m.get("metrics") or {}).get("val") or {}, sort_keys=True)[:120],
            "parity": "pass" if all(p["passed"] for p in m["parity"].values()) else "FAIL",
        })
        for shape, row in m["latency_ms"].items():
            latency.append({"model": name, "shape": shape, **{e: row.get(e) for e in (*B.ENGINES, I4.ENGINE)},
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
    deps=[*S.CHECKPOINT_ASSETS, "model_evaluation"],  # the manifest carries the test figures of its models
    code_version=source_digest(*(m.__file__ for m in (E, Q, P, S, B)),
                               *(_module_file(f"ml.gnn.{m}") for m in ("export", "data", "model")),
                               *(m.__file__ for m in (I4, M)), __file__),
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
    upstream = {a: upstream_version(context, st, a).data_version for a in S.CHECKPOINT_ASSETS}
    evaluation = _evaluation(context, st, upstream)
    _refuse_failed_inputs(cat, st, upstream)
    cfg = config.to_ml()
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key)

    def build(out: Path) -> BuildResult:
        models = S.resolve_models(st, upstream)
        for m in models:
            m.texts, m.cut_samples, m.provenance["samples"] = S.sample_texts(
                st, m.provenance["asset"], m.provenance["data_version"], m.kind, cfg.samples, m.tokenizer_dir)
            m.metrics = M.checkpoint_metrics(st, m.provenance["asset"], m.provenance["data_version"])
        manifest = B.build_bundle(
            models, out, cfg, lineage=S.walk_lineage(st, upstream),
            producer={"asset": "onnx_bundle", "code_version": code_version, "upstream": upstream},
            evaluation=evaluation,
            log=context.log.info,
        )
        return BuildResult(stats=B.bundle_stats(manifest), rows=len(models))

    result = materialize_versioned(
        context, store=st, catalog=cat, config=config.model_dump(), build=build,
        upstream={**upstream, **({"model_evaluation": evaluation["data_version"]} if evaluation else {})},
        catalog_rows=lambda v: _check_rows(v, context.run.run_id), metadata=_metadata,
    )
    version = st.get("onnx_bundle", result.data_version.value)
    return dg.MaterializeResult(data_version=result.data_version, metadata=result.metadata,
                                check_results=_check_results(version))
