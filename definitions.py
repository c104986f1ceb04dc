"""The one Definitions object of the lineage_forge code location."""

import dagster as dg

from assets import ALL_ASSETS
from assets.quality_checks import ALL_CHECKS
from jobs import ALL_JOBS
from jobs.executor import lineage_executor
from resources import ArtifactStoreResource, CatalogResource, LandingZone, TorchDevice
from sensors import ALL_SENSORS

# Every asset: owned by the team, and its stats/lineage land in the DuckDB catalog.
OWNERS = ["team:lineage-forge"]
ASSETS = dg.map_asset_specs(lambda spec: spec.merge_attributes(owners=OWNERS, kinds={"duckdb"}), ALL_ASSETS)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=ALL_JOBS,
    sensors=ALL_SENSORS,
    # execution: in_process | multiprocess | celery, chosen by the run config (jobs/executor.py)
    executor=lineage_executor,
    resources={
        "store": ArtifactStoreResource(),
        "catalog": CatalogResource(),
        "landing": LandingZone(),
        "torch_device": TorchDevice(),
    },
)
