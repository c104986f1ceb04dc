"""Release stage: hf_release, the standalone Hugging Face folder of every LM in an onnx_bundle.

    hf_release  <- onnx_bundle (and, through its manifest, the exact lm_checkpoint, lora_adapter and
                   dpo_adapter versions it exported)

Body: the bundle's checkpoint versions -> ml/export/hf_release.build_release -> version + metadata,
and the blocking check ``hf_release_greedy_parity`` (each folder, loaded with plain transformers,
decodes the same greedy tokens as its checkpoint).
"""

import json
from pathlib import Path

import dagster as dg
import polars as pl

import ml.export.hf_release as hf_export
import ml.export.metrics as export_metrics
from assets.pools import GPU_STEP
from assets.versioned import declared_inputs, materialize_versioned, preview_table
from ml.catalog import check_result_rows
from ml.export.bundle import BUNDLE_DIR, MANIFEST
from ml.fsutil import source_digest
from ml.quality.gate import failed_blocking_checks
from ml.store import BuildResult, StoredVersion
from resources import ArtifactStoreResource, CatalogResource

CHECK = "hf_release_greedy_parity"


class HfReleaseConfig(dg.Config):
    prompts: int = 8
    """Sample prompts (from each model's validation data) for the greedy-token parity check and the card."""
    max_new_tokens: int = 16
    """New tokens decoded greedily per prompt (also the folders' generation_config max_new_tokens)."""


def _index(version: StoredVersion) -> dict:
    return json.loads((version.path / hf_export.RELEASE_DIR / hf_export.INDEX).read_text("utf-8"))


def _details(index: dict) -> dict:
    return {n: {k: m["greedy_parity"][k] for k in ("prompts", "identical", "max_new_tokens", "passed")}
            for n, m in index["models"].items()}


def _metadata(version: StoredVersion) -> dict:
    index = _index(version)
    rows = [{"model": n, "from": f"{m['asset']}@{m['data_version'][:12]}", "parameters": m["model"]["parameters"],
             "greedy_identical": f"{m['greedy_parity']['identical']}/{m['greedy_parity']['prompts']}",
             "val": json.dumps(m["metrics"].get("val") or {}, sort_keys=True)[:120]}
            for n, m in index["models"].items()]
    return {"models": preview_table(pl.DataFrame(rows)), "release": dg.MetadataValue.path(
        str(version.path / hf_export.RELEASE_DIR)), "greedy_parity_passed": index["passed"]}


@dg.asset(
    group_name="export",
    deps=["onnx_bundle"],
    code_version=source_digest(hf_export.__file__, export_metrics.__file__, __file__),
    kinds={"huggingface"},
    **GPU_STEP,  # loads and runs every LM, like the export
    check_specs=[dg.AssetCheckSpec(CHECK, asset="hf_release", blocking=True,
                                   description="every released folder, loaded with AutoModelForCausalLM.from_pretrained "
                                   "offline, decodes the same greedy tokens as its checkpoint on the sample prompts")],
    description="Standalone Hugging Face folders (save_pretrained: safetensors, tokenizer, generation config, model "
    "card README.md from the lineage) of the LM, the SFT model (LoRA merged) and the DPO model exported in "
    "onnx_bundle; `lineage export-hf VERSION DIR` copies them out.",
)
def hf_release(context: dg.AssetExecutionContext, config: HfReleaseConfig, store: ArtifactStoreResource,
               catalog: CatalogResource) -> dg.MaterializeResult:
    st, cat = store.get(), catalog.get()
    bundle = declared_inputs(context, st)["onnx_bundle"]
    failed = failed_blocking_checks(cat, "onnx_bundle", bundle.data_version)
    if failed:
        raise dg.Failure(f"refusing to release from onnx_bundle@{bundle.data_version}: blocking checks failed: "
                         + ", ".join(f["check_name"] for f in failed))
    manifest = json.loads((bundle.path / BUNDLE_DIR / MANIFEST).read_text("utf-8"))
    exported = manifest.get("producer", {}).get("upstream", {})
    versions = {a: exported[a] for a in ("lora_adapter", "dpo_adapter") if a in exported}
    if "lora_adapter" in versions:
        base = st.get("lora_adapter", versions["lora_adapter"]).manifest.get("upstream", {}).get("lm_checkpoint")
        if base:
            versions["lm_checkpoint"] = base
    upstream = {"onnx_bundle": bundle.data_version, **versions}

    def build(out: Path) -> BuildResult:
        index = hf_export.build_release(st, versions, out / hf_export.RELEASE_DIR, prompts=config.prompts,
                                max_new_tokens=config.max_new_tokens,
                                bundle={**manifest, "data_version": bundle.data_version}, log=context.log.info)
        stats = {f"{n}.greedy_identical": m["greedy_parity"]["identical"] for n, m in index["models"].items()}
        stats.update({f"{n}.parameters": m["model"]["parameters"] for n, m in index["models"].items()})
        return BuildResult(stats=stats, rows=len(index["models"]))

    result = materialize_versioned(
        context, store=st, catalog=cat, config=config.model_dump(), upstream=upstream, build=build,
        metadata=_metadata,
        catalog_rows=lambda v: {"check_results": check_result_rows(
            "hf_release", v.data_version, context.run.run_id,
            [(CHECK, _index(v)["passed"], "ERROR", json.dumps(_details(_index(v)), sort_keys=True))])})
    index = _index(st.get("hf_release", result.data_version.value))
    bad = [n for n, m in index["models"].items() if not m["greedy_parity"]["passed"]]
    return dg.MaterializeResult(
        data_version=result.data_version, metadata=result.metadata,
        check_results=[dg.AssetCheckResult(
            check_name=CHECK, passed=not bad, severity=dg.AssetCheckSeverity.ERROR,
            description=(f"greedy tokens differ from the checkpoint for {bad}" if bad else
                         "every folder decodes the same greedy tokens as its checkpoint"),
            metadata={"details": dg.MetadataValue.json(_details(index))})])
