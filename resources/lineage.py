"""Small ConfigurableResources over ml/'s store and catalog.

``home`` left empty means ``$LINEAGE_HOME``, else ``.lineage/`` in the checkout, so the
same definitions work for the README demo, tests (which set LINEAGE_HOME to a temp
dir) and deployments (which set it, or the field, to a shared path).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from ml.catalog import Catalog
from ml.paths import landing_dir, lineage_home
from ml.storage import location
from ml.store import ArtifactStore


class ArtifactStoreResource(dg.ConfigurableResource):
    """Immutable, content-addressed versions under LINEAGE_HOME/artifacts/<asset>/<data_version>/."""

    home: str = Field(default="", description="LINEAGE_HOME; empty: $LINEAGE_HOME or .lineage/")

    def get(self) -> ArtifactStore:
        return ArtifactStore(lineage_home(self.home or None))


class CatalogResource(dg.ConfigurableResource):
    """Append-only catalog tables with DuckDB views (LINEAGE_HOME/catalog/catalog.duckdb)."""

    home: str = Field(default="", description="LINEAGE_HOME; empty: $LINEAGE_HOME or .lineage/")

    def get(self) -> Catalog:
        return Catalog(lineage_home(self.home or None))


class LandingZone(dg.ConfigurableResource):
    """Directory where raw *.jsonl / *.jsonl.gz files are dropped."""

    path: str = Field(default="", description="landing directory; empty: LINEAGE_HOME/landing")

    def dir(self) -> Path:
        return location(self.path) if self.path else landing_dir(lineage_home())  # a path or an s3:// URL
