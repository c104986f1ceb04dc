"""Dagster resources: state (artifact store, catalog, landing zone) and, later, hardware."""

from resources.lineage import ArtifactStoreResource, CatalogResource, LandingZone

__all__ = ["ArtifactStoreResource", "CatalogResource", "LandingZone"]
