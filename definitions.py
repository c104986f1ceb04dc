"""The one Definitions object of the lineage_forge code location."""

import dagster as dg

from assets import ALL_ASSETS
from assets.checks import ALL_CHECKS
from jobs import ALL_JOBS
from resources import ArtifactStoreResource, CatalogResource, LandingZone, TorchDevice
from sensors import ALL_SENSORS

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=ALL_JOBS,
    sensors=ALL_SENSORS,
    resources={
        "store": ArtifactStoreResource(),
        "catalog": CatalogResource(),
        "landing": LandingZone(),
        "torch_device": TorchDevice(),
    },
)
