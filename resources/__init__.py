"""Dagster resources: state (artifact store, catalog, landing zone) and, later, hardware."""

from resources.lineage import ArtifactStoreResource, CatalogResource, LandingZone
from resources.torch_device import TorchDevice

__all__ = ["ArtifactStoreResource", "CatalogResource", "LandingZone", "TorchDevice"]
