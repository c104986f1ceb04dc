"""Training stage: the checkpoint assets, one loop (ml/train/), in the Dagster pool ``gpu``.

Each asset reads its declared inputs, trains (in this process, or under torchrun when
``train.nproc_per_node`` > 1) into the store's staging directory, resumes from
``work/<asset>/<fingerprint>/`` after a kill, publishes, and reports two blocking checks.
"""


import shutil
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import ValidationError

import ml.train as train_pkg
from assets.config import dagster_config
from assets.pools import GPU_STEP
from assets.versioned import declared_inputs, fingerprint_for, materialize_versioned
from ml.catalog import check_result_rows
from ml.fsutil import source_digest
from ml.storage_work import WorkState
from ml.store import BuildResult, StoredVersion
from ml.train import config as tc
from resources import ArtifactStoreResource, CatalogResource, TorchDevice

# the loop and models, plus the readers the training code calls (tokenizer, token shards, encode_sft)
CODE_VERSION = source_digest(*sorted(str(p) for p in Path(train_pkg.__file__).parent.glob("*.py")
                                     if p.name not in ("cli.py", "__main__.py")),
                             *(str(Path(train_pkg.__file__).parents[1] / f) for f in
                               ("tokenizer.py", "tokenized_corpus.py", "datasets/sft.py", "datasets/ner.py",
                                "datasets/gnn.py", "gnn/model.py", "gnn/data.py")), __file__)


LMCheckpointConfig = dagster_config(tc.LMCheckpointSettings, "LMCheckpointConfig")
LoraAdapterConfig = dagster_config(tc.LoraAdapterSettings, "LoraAdapterConfig")
EmbeddingCheckpointConfig = dagster_config(tc.EmbeddingCheckpointSettings, "EmbeddingCheckpointConfig")
RelationCheckpointConfig = dagster_config(tc.RelationCheckpointSettings, "RelationCheckpointConfig")
GnnCheckpointConfig = dagster_config(tc.GnnCheckpointSettings, "GnnCheckpointConfig")
NerCheckpointConfig = dagster_config(tc.NerCheckpointSettings, "NerCheckpointConfig")


def _specs(asset: str) -> list[dg.AssetCheckSpec]:
    from ml.train.checkpoint_checks import EXPERTS_OK, LOSS_FELL, VAL_OK

    specs = [
        dg.AssetCheckSpec(LOSS_FELL, asset=asset, blocking=True,
                          description="train loss fell (first vs last tenth of the logged points) by > checks.min_loss_drop"),
        dg.AssetCheckSpec(VAL_OK, asset=asset, blocking=True,
                          description="validation metrics are finite and past checks.val_floor / checks.val_ceiling"),
    ]
    if asset == "lm_checkpoint":
        specs.append(dg.AssetCheckSpec(
            EXPERTS_OK, asset=asset, blocking=True,
            description="MoE LM (arch: mixtral): at least checks.min_experts_used of the (layer, expert) pairs get "
            ">= checks.expert_used_share of their fair share of the routing (experts not collapsed); dense: passes"))
    return specs


def _metric_rows(asset: str):
    def rows(version: StoredVersion) -> dict:
        from ml.train.checkpoint_checks import read_metrics

        return {"training_metrics": [
            {"asset": asset, "data_version": version.data_version, "run_id": version.manifest.get("run_id", ""), **r}
            for r in read_metrics(version.path)]}
    return rows


def _metadata(version: StoredVersion, torch_device: TorchDevice) -> dict[str, Any]:
    from ml.train.plots import data_uri_markdown

    from ml.train.run import read_summary

    summary = read_summary(version.path)  # with its run facts (_run/train_run.json)
    png = version.path / "loss_curve.png"
    md: dict[str, Any] = {
        "loss_curve": dg.MetadataValue.md(data_uri_markdown(png.read_bytes(), f"{version.asset} loss curve")),
        "loss_curve_png": dg.MetadataValue.path(str(png)),
        "steps": dg.MetadataValue.int(int(summary["steps"])),
        "train_loss": dg.MetadataValue.json({"first": summary.get("first_train_loss"),
                                            "last": summary.get("final_train_loss")}),
        "val": dg.MetadataValue.json(summary.get("val") or {}),
        "best": dg.MetadataValue.json(summary.get("best") or {}),
        "parameters": dg.MetadataValue.int(int(summary["parameters"])),
        "trainable_parameters": dg.MetadataValue.int(int(summary["trainable_parameters"])),
        "resumed_from_step": summary.get("resumed_from_step"),
        **{k: dg.MetadataValue.json(summary[k]) for k in ("resume_from", "init_from") if summary.get(k)},
        "data": dg.MetadataValue.json(summary.get("data") or {}),
    }
    if summary.get("tokens_per_s"):
        md["tokens_per_s"] = dg.MetadataValue.float(round(float(summary["tokens_per_s"]), 1))
        md["samples_per_s"] = dg.MetadataValue.float(round(float(summary["samples_per_s"]), 2))
    md.update(torch_device.materialization_metadata(summary))
    return md


def _build_stats(summary: dict[str, Any]) -> dict[str, float]:
    stats = {"steps": summary["steps"], "parameters": summary["parameters"],
             "trainable_parameters": summary["trainable_parameters"]}
    for k in ("first_train_loss", "final_train_loss"):  # throughput is a run fact (catalog run_facts)
        if summary.get(k) is not None:
            stats[k] = summary[k]
    stats.update({f"val.{k}": v for k, v in (summary.get("val") or {}).items()})
    return stats


def _checkpoint_refs(asset: str, loop: tc.LoopSettings, store, upstream: dict[str, str]) -> dict[str, dict]:
    """train.resume_from / train.init_from resolved to verified step checkpoints; the stored version a
    checkpoint belongs to becomes an upstream version (a lineage edge: parent -> this version)."""
    out = {}
    for key in ("resume_from", "init_from"):
        ref = getattr(loop, key)
        if not ref:
            continue
        from ml.train import checkpointing as ckpt  # imports torch: only when a checkpoint is named (not on cache hits)

        try:
            r = ckpt.resolve_ref(ref, asset=asset, store=store).as_dict()
        except ckpt.CheckpointRefError as exc:
            raise dg.Failure(f"{asset} config train.{key}: {exc}") from exc
        if r["asset"] and upstream.get(r["asset"], r["data_version"]) != r["data_version"]:
            raise dg.Failure(f"{asset} config train.{key}: {r['asset']}@{r['data_version']} conflicts with the input "
                             f"{r['asset']}@{upstream[r['asset']]} this model is trained on")
        out[key] = r
    return out


def _sweep_point(cat, store, asset: str, sweep: str) -> dict:
    """The best point of the newest ``sweep`` version in sweep_results (train.from_sweep)."""
    rows = cat.query("SELECT data_version, point, params, model_version, metric, value FROM sweep_results "
                     "WHERE sweep = ? AND asset = ? AND best ORDER BY created_at DESC LIMIT 1", [sweep, asset])
    if rows.height == 0:
        raise dg.Failure(f"{asset} config train.from_sweep: no {asset} sweep named {sweep!r} in sweep_results; "
                         "materialize model_sweep with that name first (sweep_job)")
    r = rows.row(0, named=True)
    if not store.has_version(asset, r["model_version"]):
        raise dg.Failure(f"{asset} config train.from_sweep: the best point {asset}@{r['model_version']} of sweep "
                         f"{sweep}@{r['data_version']} is not in the store")
    return {"sweep": sweep, "sweep_version": r["data_version"], "point": r["point"], "params": r["params"],
            "point_version": r["model_version"], "metric": r["metric"], "value": r["value"]}


def track_training(context, home, version: StoredVersion, result: dg.MaterializeResult, settings: dict) -> dict:
    """Log a newly built checkpoint to MLflow (ml/tracking.py); a cache hit logs nothing. Never raises:
    a tracker that cannot be reached is a warning, and the metadata says so."""
    md = result.metadata or {}
    if getattr(md.get("cache_hit"), "value", md.get("cache_hit")):
        return {"status": "skipped", "why": "cache hit: logged when this version was built"}
    from ml.tracking import log_training

    info = log_training(home, version.path, asset=version.asset, data_version=version.data_version,
                        fingerprint=str(version.manifest.get("fingerprint", "")),
                        code_version=str(version.manifest.get("code_version", "")), run_id=context.run.run_id,
                        settings=settings)
    if info["status"] == "failed":
        context.log.warning(f"MLflow tracking failed, the materialization goes on: {info['error']}")
    return info


def train_checkpoint(
    context: dg.AssetExecutionContext, config: dg.Config, inputs: dict[str, StoredVersion],
    store: ArtifactStoreResource, catalog: CatalogResource, torch_device: TorchDevice,
) -> dg.MaterializeResult:
    """Shared body of the four assets: fingerprint, train or reuse, publish, checks."""
    from ml.train import checkpoint_checks
    from ml.train.run import TrainSpec, launch, split_run_facts

    asset = context.asset_key.to_user_string()
    try:
        settings = tc.SETTINGS[asset].model_validate(config.model_dump())
    except ValidationError as exc:
        raise dg.Failure(f"{asset} config: " + "; ".join(tc.format_validation_error(exc))) from exc
    device = torch_device.settings()
    st, cat = store.get(), catalog.get()
    upstream = {name: v.data_version for name, v in inputs.items()}
    fp_config = {**settings.model_dump(mode="json"), "torch_device": device.fingerprint()}
    refs = _checkpoint_refs(asset, settings.train, st, upstream)
    if refs:  # the exact checkpoint (its state.json digest) is part of what this version is made from
        fp_config["checkpoint_refs"] = {k: {"path": r["path"], "state_sha256": r["state_sha256"]} for k, r in refs.items()}
        upstream.update({r["asset"]: r["data_version"] for r in refs.values() if r["asset"]})
    swept = _sweep_point(cat, st, asset, settings.train.from_sweep) if settings.train.from_sweep else None
    if swept:  # the sweep's best point: its version and the sweep version are what this version is made from
        fp_config["from_sweep"] = swept
        upstream["model_sweep"] = swept["sweep_version"]
    work_state = WorkState(st.home, asset, fingerprint_for(context, fp_config, upstream))  # local, or mirrored to s3
    work = work_state.local

    def build(out: Path) -> BuildResult:
        if swept:
            src = st.open(asset, swept["point_version"])
            for f in src.manifest["files"]:  # every file as it is: the content (and data version) stays the point's
                dst = out / f["path"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src.file(f["path"]), dst)
            context.log.info(f"{asset}: best point {swept['point']} of sweep {swept['sweep']}@{swept['sweep_version']} "
                             f"({swept['metric']} {swept['value']:.4g}), {asset}@{swept['point_version']}")
            return BuildResult(stats=dict(src.stats), rows=int(src.manifest.get("rows") or 0))
        spec = TrainSpec(asset=asset, settings=settings.model_dump(mode="json"), out_dir=str(out), work_dir=str(work),
                         inputs={name: str(v.path) for name, v in inputs.items()}, device=device, **refs)
        with work_state.syncing():  # resume state: pulled first, pushed while training and at the end
            summary = launch(spec, log=context.log.info)
        return BuildResult(stats=_build_stats(summary), rows=int(summary["steps"]),
                           run_facts=split_run_facts(summary)[1])

    result = materialize_versioned(
        context, store=st, catalog=cat, config=fp_config, upstream=upstream, build=build,
        catalog_rows=_metric_rows(asset), metadata=lambda v: _metadata(v, torch_device))
    version = st.get(asset, result.data_version.value)
    tracked = track_training(context, st.home, version, result, settings.model_dump(mode="json"))
    outcomes = checkpoint_checks.evaluate(version.path, settings.checks)
    cat.append({"check_results": check_result_rows(
        asset, version.data_version, context.run.run_id, [(o.name, o.passed, "ERROR", o.details) for o in outcomes])})
    for o in outcomes:
        (context.log.info if o.passed else context.log.error)(f"check {o.name}: {'passed' if o.passed else 'FAILED'} "
                                                              f"({o.details})")
    return dg.MaterializeResult(
        data_version=result.data_version, metadata={**result.metadata, "mlflow": dg.MetadataValue.json(tracked)},
        check_results=[dg.AssetCheckResult(check_name=o.name, passed=o.passed, severity=dg.AssetCheckSeverity.ERROR,
                                           metadata={"details": o.details, "values": dg.MetadataValue.json(o.values)})
                       for o in outcomes])


_COMMON = dict(group_name="models", kinds={"torch"}, **GPU_STEP, code_version=CODE_VERSION)


@dg.asset(deps=["tokenized_corpus", "tokenizer"], check_specs=_specs("lm_checkpoint"), **_COMMON,
          description="Small decoder-only causal LM (Llama or GPT-2 config) trained from scratch on tokenized_corpus; "
          "val loss and perplexity; save_pretrained (safetensors) with the tokenizer.")
def lm_checkpoint(context: dg.AssetExecutionContext, config: LMCheckpointConfig, store: ArtifactStoreResource,
                  catalog: CatalogResource, torch_device: TorchDevice) -> dg.MaterializeResult:
    return train_checkpoint(context, config, declared_inputs(context, store.get()), store, catalog, torch_device)


@dg.asset(deps=["lm_checkpoint", "sft_dataset", "tokenizer"], check_specs=_specs("lora_adapter"), **_COMMON,
          description="peft LoRA adapter (or full fine-tune) of lm_checkpoint on sft_dataset, prompt tokens masked.")
def lora_adapter(context: dg.AssetExecutionContext, config: LoraAdapterConfig, store: ArtifactStoreResource,
                 catalog: CatalogResource, torch_device: TorchDevice) -> dg.MaterializeResult:
    return train_checkpoint(context, config, declared_inputs(context, store.get()), store, catalog, torch_device)


@dg.asset(deps=["embedding_dataset", "tokenizer"], check_specs=_specs("embedding_checkpoint"), **_COMMON,
          description="Bi-encoder (mean pooling, L2-normalised) trained contrastively with in-batch negatives; "
          "base: small BERT from scratch or all-MiniLM-L6-v2 + LoRA (merged); val recall@1, mean positive cosine.")
def embedding_checkpoint(context: dg.AssetExecutionContext, config: EmbeddingCheckpointConfig,
                         store: ArtifactStoreResource, catalog: CatalogResource,
                         torch_device: TorchDevice) -> dg.MaterializeResult:
    return train_checkpoint(context, config, declared_inputs(context, store.get()), store, catalog, torch_device)


@dg.asset(deps=["relation_dataset", "tokenizer"], check_specs=_specs("relation_checkpoint"), **_COMMON,
          description="Relation classifier (BertForSequenceClassification, id2label) over entity-marked text; "
          "val accuracy and macro F1.")
def relation_checkpoint(context: dg.AssetExecutionContext, config: RelationCheckpointConfig,
                        store: ArtifactStoreResource, catalog: CatalogResource,
                        torch_device: TorchDevice) -> dg.MaterializeResult:
    return train_checkpoint(context, config, declared_inputs(context, store.get()), store, catalog, torch_device)


@dg.asset(deps=["gnn_dataset", "embedding_checkpoint"], check_specs=_specs("gnn_checkpoint"), **_COMMON,
          description="Graph ranker (torch_geometric GINEConv, query-conditioned) over gnn_dataset subgraphs, node "
          "features from embedding_checkpoint; val MRR and NDCG@10 next to the no-graph baseline (cosine of the "
          "embedding model) on the same queries.")
def gnn_checkpoint(context: dg.AssetExecutionContext, config: GnnCheckpointConfig, store: ArtifactStoreResource,
                   catalog: CatalogResource, torch_device: TorchDevice) -> dg.MaterializeResult:
    return train_checkpoint(context, config, declared_inputs(context, store.get()), store, catalog, torch_device)


@dg.asset(deps=["ner_dataset", "tokenizer"], check_specs=_specs("ner_checkpoint"), **_COMMON,
          description="BIO token classifier (BertForTokenClassification from scratch, id2label) on ner_dataset; "
          "val entity-level precision/recall/F1 per type and micro (exact span).")
def ner_checkpoint(context: dg.AssetExecutionContext, config: NerCheckpointConfig, store: ArtifactStoreResource,
                   catalog: CatalogResource, torch_device: TorchDevice) -> dg.MaterializeResult:
    return train_checkpoint(context, config, declared_inputs(context, store.get()), store, catalog, torch_device)


TRAINING_ASSETS = [lm_checkpoint, lora_adapter, embedding_checkpoint, relation_checkpoint, gnn_checkpoint,
                   ner_checkpoint]
