"""Small ConfigurableResources over ml/'s store and catalog.

``home`` left empty means ``$LINEAGE_HOME``, else ``.lineage/`` in the checkout, so the
same definitions work for the README demo, tests (which set LINEAGE_HOME to a temp
dir) and deployments (which set it, or the field, to a shared path or an s3:// URL).

For an ``s3://`` home the endpoint and credentials come from the AWS_* variables, or from the
``s3_*`` fields (``dg.EnvVar`` works for the secret), which win over them (``ml.storage.configure``).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from ml.catalog import Catalog
from ml.paths import landing_dir, lineage_home
from ml.storage import configure, location
from ml.store import ArtifactStore


class ObjectStoreSettings(dg.ConfigurableResource):
    """Endpoint and credentials for s3:// locations; empty fields fall back to the AWS_* variables."""

    s3_endpoint_url: str = Field(default="", description="S3 endpoint; empty: $AWS_ENDPOINT_URL (unset: AWS)")
    s3_access_key_id: str = Field(default="", description="empty: $AWS_ACCESS_KEY_ID")
    s3_secret_access_key: str = Field(default="", description="empty: $AWS_SECRET_ACCESS_KEY")
    s3_region: str = Field(default="", description="empty: $AWS_REGION, else us-east-1")

    def _configure(self) -> None:
        if self.s3_endpoint_url or self.s3_access_key_id or self.s3_secret_access_key or self.s3_region:
            configure(endpoint_url=self.s3_endpoint_url, key=self.s3_access_key_id,
                      secret=self.s3_secret_access_key, region=self.s3_region)


class ArtifactStoreResource(ObjectStoreSettings):
    """Immutable, content-addressed versions under LINEAGE_HOME/artifacts/<asset>/<data_version>/."""

    home: str = Field(default="", description="LINEAGE_HOME (a path or s3://bucket/prefix); empty: $LINEAGE_HOME or .lineage/")

    def get(self) -> ArtifactStore:
        self._configure()
        return ArtifactStore(lineage_home(self.home or None))


class CatalogResource(ObjectStoreSettings):
    """Append-only catalog tables with DuckDB views (LINEAGE_HOME/catalog/catalog.duckdb)."""

    home: str = Field(default="", description="LINEAGE_HOME (a path or s3://bucket/prefix); empty: $LINEAGE_HOME or .lineage/")

    def get(self) -> Catalog:
        self._configure()
        return Catalog(lineage_home(self.home or None))


class LandingZone(ObjectStoreSettings):
    """Directory (or s3:// prefix) where raw *.jsonl / *.jsonl.gz files are dropped."""

    path: str = Field(default="", description="landing directory or s3:// prefix; empty: LINEAGE_HOME/landing")

    def dir(self) -> Path:
        self._configure()
        return location(self.path) if self.path else landing_dir(lineage_home())  # a path or an s3:// URL
