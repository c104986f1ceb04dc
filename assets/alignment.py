"""Alignment stage: preference_dataset (group datasets) and dpo_adapter (group models).

    preference_dataset  <- sft_dataset, cleaned_chunks, landing/preferences/*.jsonl
    dpo_adapter         <- lora_adapter (and the lm_checkpoint it was trained on), preference_dataset, tokenizer
"""

from pathlib import Path

import dagster as dg
import polars as pl

import ml.datasets as datasets_pkg
import ml.datasets.preference as preference
import ml.raw_docs as raw_docs_engine
from assets.datasets import SHARED, DatasetConfig
from assets.pools import GPU_STEP
from assets.config import dagster_config
from assets.training import CODE_VERSION as TRAIN_CODE_VERSION
from assets.training import _specs, train_checkpoint
from assets.versioned import declared_inputs, materialize_versioned, preview_table
from ml.cleaned_chunks.pipeline import read_clean_docs
from ml.fsutil import source_digest
from ml.store import BuildResult, StoredVersion
from ml.train import config as tc
from resources import ArtifactStoreResource, CatalogResource, LandingZone, TorchDevice
from resources.dagster_config import dataclass_from_config


class PreferenceDatasetConfig(DatasetConfig):
    derive: str = "auto"
    """auto: derive pairs from sft_dataset only when landing/preferences/ supplies none; always; never."""
    system_prompt: str = preference.DEFAULT_SYSTEM
    """System turn put before a supplied prompt that is not in the chat template yet."""
    max_doc_bytes: int = raw_docs_engine.IngestConfig.max_doc_bytes
    """Lines longer than this many bytes are quarantined as too_large (never read whole)."""
    excerpt_chars: int = raw_docs_engine.IngestConfig.excerpt_chars


def _quarantine_rows(version: StoredVersion) -> dict:
    q = pl.read_parquet(version.path / "quarantine" / "*.parquet")
    return {"quarantine": q.select(
        "source", "line", "reason", "excerpt", "detail", asset=pl.lit("preference_dataset"),
        data_version=pl.lit(version.data_version), run_id=pl.lit(version.manifest["run_id"]))}


def _metadata(version: StoredVersion) -> dict:
    s = version.stats
    reasons = {r: int(s[f"landing.quarantine.{r}"]) for r in preference.LINE_REASONS
               if s.get(f"landing.quarantine.{r}")}
    skipped = {k.split(".", 1)[1]: int(v) for k, v in s.items() if k.startswith("skipped.") and v}
    return {
        "train_rows": dg.MetadataValue.int(int(s.get("train.examples", 0))),
        "val_rows": dg.MetadataValue.int(int(s.get("val.examples", 0))),
        "landing_accounting": f"{int(s['landing.lines_read'])} lines read = {int(s['landing.kept'])} kept + "
                              f"{int(s['landing.quarantined'])} quarantined",
        "accounting": f"{int(s['examples_in'])} pairs in ({int(s['landing.kept'])} supplied + "
                      f"{int(s['derived.made'])} derived) = {int(s['train.examples'])} train + "
                      f"{int(s['val.examples'])} val + {int(s['skipped.mixed_out'])} mixed out + "
                      f"{int(s['skipped.prompt_in_train'])} prompt in train",
        "quarantine_reasons": dg.MetadataValue.json(reasons),
        "skipped": dg.MetadataValue.json(skipped),
        "train_counts": dg.MetadataValue.json({o: int(s.get(f"train.origin.{o}", 0)) for o in preference.ORIGINS}),
        "preview": preview_table(pl.read_parquet(version.path / "train.parquet", columns=["prompt", "chosen", "rejected",
                                                                                          "origin"], n_rows=6),
                                 max_chars=120),
    }


@dg.asset(
    group_name="datasets",
    deps=["sft_dataset", "cleaned_chunks"],
    code_version=source_digest(preference.__file__, raw_docs_engine.__file__, *SHARED, __file__),
    kinds={"polars"},
    description="(prompt, chosen, rejected) pairs for DPO: user pairs from landing/preferences/*.jsonl, validated "
    "line by line with raw_docs' quarantine, and/or pairs derived from sft_dataset (rejected = the answer to "
    "another question of the same relation); mixed and split by document like every dataset.",
)
def preference_dataset(context: dg.AssetExecutionContext, config: PreferenceDatasetConfig,
                       store: ArtifactStoreResource, catalog: CatalogResource,
                       landing: LandingZone) -> dg.MaterializeResult:
    st = store.get()
    inputs = declared_inputs(context, st)
    sft, chunks = inputs["sft_dataset"], inputs["cleaned_chunks"]
    files = preference.scan_preferences(landing.dir())
    try:
        cfg = dataclass_from_config(preference.PreferenceConfig, config)
    except ValueError as exc:
        raise dg.Failure(f"preference_dataset config: {exc}") from exc
    ingest = raw_docs_engine.IngestConfig(max_doc_bytes=config.max_doc_bytes, excerpt_chars=config.excerpt_chars)

    def build(out: Path) -> BuildResult:
        supplied, report = preference.read_pairs(files, out / "quarantine", config.system_prompt, ingest)
        sft_rows = pl.concat([pl.read_parquet(sft.path / f"{s}.parquet") for s in ("train", "val", "test")
                              if (sft.path / f"{s}.parquet").is_file()])  # versions before test splits: no test
        docs = read_clean_docs(chunks.path).select("doc_id", "source").collect()
        parts, stats = preference.build_preference(supplied, sft_rows, docs, cfg)
        stats.update(report.stats())  # no pair at all: the blocking train_split_non_empty check fails
        return BuildResult(stats=stats, rows=datasets_pkg.write_splits(out, parts))

    upstream = {"sft_dataset": sft.data_version, "cleaned_chunks": chunks.data_version,
                **{f"landing:{f.relpath}": f.sha256[:16] for f in files}}
    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(), upstream=upstream, build=build,
        catalog_rows=_quarantine_rows, metadata=_metadata,
    )


DpoAdapterConfig = dagster_config(tc.DpoAdapterSettings, "DpoAdapterConfig")


@dg.asset(deps=["lora_adapter", "preference_dataset", "tokenizer"], check_specs=_specs("dpo_adapter"),
          group_name="models", kinds={"torch"}, **GPU_STEP,
          code_version=TRAIN_CODE_VERSION + source_digest(preference.__file__, __file__, length=8),
          description="DPO (sigmoid loss, beta, label smoothing; prompt tokens masked) of the SFT model "
          "(lora_adapter merged into its lm_checkpoint) on preference_dataset, the SFT model as the frozen "
          "reference; val loss, reward accuracy, chosen/rejected rewards, margin; model/ = merged weights.")
def dpo_adapter(context: dg.AssetExecutionContext, config: DpoAdapterConfig, store: ArtifactStoreResource,
                catalog: CatalogResource, torch_device: TorchDevice) -> dg.MaterializeResult:
    st = store.get()
    inputs = declared_inputs(context, st)
    base = inputs["lora_adapter"].manifest.get("upstream", {}).get("lm_checkpoint")
    if not base or not st.has_version("lm_checkpoint", base):
        raise dg.Failure(f"lora_adapter@{inputs['lora_adapter'].data_version}: its base lm_checkpoint {base!r} "
                         "is not in the store")
    inputs["lm_checkpoint"] = st.get("lm_checkpoint", base)  # the base the adapter was trained on
    return train_checkpoint(context, config, inputs, store, catalog, torch_device)


ALIGNMENT_ASSETS = [preference_dataset, dpo_adapter]
