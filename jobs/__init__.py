"""Asset-selection jobs (DESIGN.md), by asset group, so new assets of a group join their job.

| job | assets | pool |
|---|---|---|
| ingest_job | groups data, corpus, datasets: raw_docs ... tokenized_corpus and the *_dataset assets | - |
| train_job | group models: lm_checkpoint, lora_adapter, embedding_checkpoint, relation_checkpoint | gpu |
| export_job | group export: onnx_bundle | gpu |
| full_pipeline | everything | training/export ops: gpu |

Each job includes the asset checks of its assets. The landing sensor requests ingest_job;
the retrain sensor requests train_job (only the models whose inputs changed) and then
export_job.
"""

import dagster as dg

INGEST_GROUPS = ("data", "corpus", "datasets")
TRAIN_GROUPS = ("models",)
EXPORT_GROUPS = ("export",)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups(*INGEST_GROUPS),
    description="The landing zone to training-ready data: raw_docs, the corpus stage (cleaned_chunks, "
    "relation_triples, tokenizer, tokenized_corpus) and the datasets.",
)

train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.groups(*TRAIN_GROUPS),
    description="Model checkpoints (group models) from the current versions of their training data.",
)

export_job = dg.define_asset_job(
    "export_job",
    selection=dg.AssetSelection.groups(*EXPORT_GROUPS),
    description="The ONNX bundle (group export) from the current checkpoints.",
)

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Every asset, from the landing zone to the exported bundle.",
)

ALL_JOBS = [ingest_job, train_job, export_job, full_pipeline]
