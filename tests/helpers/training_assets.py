"""The checkpoint assets on a temporary instance: upstream versions published as the ingest job would,
training assets materialized with CPU resources, and their mats by asset."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg

from ml.store import ArtifactStore, BuildResult
from resources import ArtifactStoreResource, CatalogResource, TorchDevice
from tests.helpers.training import make_inputs


def asset_resources():
    return {"store": ArtifactStoreResource(), "catalog": CatalogResource(),
            "torch_device": TorchDevice(device="cpu", seed=0, threads=1)}


def publish_upstream(home: Path, instance: dg.DagsterInstance, tmp: Path) -> dict[str, str]:
    """Upstream versions put in the store and recorded as materialized (as the ingest job would)."""
    store = ArtifactStore(home)
    versions = {}
    for name, src in make_inputs(tmp).items():
        def build(out: Path, src=src) -> BuildResult:
            shutil.copytree(src, out, dirs_exist_ok=True)
            return BuildResult()
        v = store.put(name, build, fingerprint=hashlib.sha256(name.encode()).hexdigest()[:16], code_version="test",
                      config={}, upstream={})
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=name, tags={"dagster/data_version": v.data_version}))
        versions[name] = v.data_version
    return versions


def run_assets(instance, assets, config: dict, raise_on_error=True):
    from assets import training

    defs = [getattr(training, a) for a in assets]
    return dg.materialize(defs, instance=instance, resources=asset_resources(), raise_on_error=raise_on_error,
                          run_config={"ops": {a: {"config": config[a]} for a in assets}})


def mats_of(result) -> dict[str, dg.AssetMaterialization]:
    return {e.asset_key.to_user_string(): e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()}
