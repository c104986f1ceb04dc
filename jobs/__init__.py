"""Asset-selection jobs (DESIGN.md): ingest_job and full_pipeline; train/export jobs join with their assets."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("data", "corpus"),
    description="raw_docs and everything derived from the corpus (data, corpus and dataset groups).",
)

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Every asset, from the landing zone to the exported bundle.",
)

ALL_JOBS = [ingest_job, full_pipeline]
