"""`lineage rebuild`: the whole debug-shaped pipeline (tiny sizes) materialized once, then the bundle rebuilt
with --recursive (every asset again, each from its recorded upstream versions): every version comes back
byte-identical with the same data version. A changed code version is refused naming the file, a recorded
config the asset no longer accepts is reported as a config change, neither as corruption."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from jobs.rebuild import _copy_version, rebuild_one
from ml.catalog import Catalog
from ml.cli import main as lineage
from ml.rebuild import upstream_closure
from ml.store import ArtifactStore, BuildResult
from resources import ArtifactStoreResource, CatalogResource, LandingZone, TorchDevice
from tests.helpers.pipeline import TINY, corpus_lines, preference_lines

pytestmark = pytest.mark.slow

LOOP = TINY["ops"]["lm_checkpoint"]["config"]["train"]
OPS = {
    **TINY["ops"],
    # the e2e profile's 10 DPO steps left the loss flat (training_loss_fell blocks the bundle)
    "dpo_adapter": {"config": {"model": {"lora": {"r": 4, "alpha": 8}, "max_len": 192, "beta": 0.5},
                               "train": {**LOOP, "max_steps": 20, "lr": 5e-3}}},
    "onnx_bundle": {"config": {**TINY["ops"]["onnx_bundle"]["config"], "int4": False, "quantize_embeddings": "on"}},
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from assets import ALL_ASSETS

    home = tmp_path_factory.mktemp("rebuild") / "lh"
    (home / "landing" / "preferences").mkdir(parents=True)
    (home / "dagster").mkdir()
    (home / "landing" / "docs.jsonl").write_text("\n".join(corpus_lines()) + "\n")
    (home / "landing" / "preferences" / "pairs.jsonl").write_text("\n".join(preference_lines()) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LINEAGE_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(home / "dagster"))
        mp.setenv("LINEAGE_TRACKING", "off")
        resources = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone(),
                     "torch_device": TorchDevice(device="cpu", seed=0, threads=1)}
        with dg.instance_for_test() as instance:
            result = dg.materialize(ALL_ASSETS, instance=instance, resources=resources, raise_on_error=False,
                                    selection=dg.AssetSelection.assets("onnx_bundle").upstream(),
                                    run_config={"ops": OPS})
            assert result.success, [str(e.event_specific_data.error.message)[:500]
                                    for e in result.get_step_failure_events()]
            versions = {e.asset_key.to_user_string(): e.event_specific_data.materialization.tags["dagster/data_version"]
                        for e in result.get_asset_materialization_events()}
        yield home, versions


def test_recursive_rebuild_of_the_bundle_is_byte_identical(pipeline, capsys):
    home, versions = pipeline
    bundle = versions["onnx_bundle"]
    assert lineage(["rebuild", f"onnx_bundle@{bundle[:10]}", "--recursive"]) == 0
    out = capsys.readouterr().out
    rows = Catalog(home).query("SELECT asset, data_version, identical, rebuilt_version, detail FROM rebuilds")
    got = {r["asset"]: r for r in rows.iter_rows(named=True)}
    assert set(got) == set(versions)  # every asset of the pipeline rebuilt: the bundle and its whole closure
    for asset, v in versions.items():
        assert got[asset]["data_version"] == v and got[asset]["rebuilt_version"] == v, got[asset]["detail"]
        assert got[asset]["identical"] is True
        assert f"{asset}@{v}: IDENTICAL" in out
    # the runs differed, the content did not: each original keeps its own run record
    store = ArtifactStore(home)
    assert store.get("lm_checkpoint", versions["lm_checkpoint"]).file("_run/train_run.json").is_file()
    assert store.get("onnx_bundle", bundle).file("_run/facts.json").is_file()


def _recorded_as(home, tmp_path, asset: str, version: str, **changes):
    """A second home holding asset@version as if an older code / config had recorded it (same files)."""
    src, other = ArtifactStore(home), ArtifactStore(tmp_path / "other")
    for up, up_v in upstream_closure(src, asset, version):
        _copy_version(src.open(up, up_v), other)
    orig = src.open(asset, version)
    m = orig.manifest

    def build(out):
        for f in m["files"]:
            (out / f["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(orig.file(f["path"]), out / f["path"])
        return BuildResult()

    other.put(asset, build, fingerprint="f" * 16, code_version=changes.get("code_version", m["code_version"]),
              config=changes.get("config", m["config"]), upstream=m["upstream"],
              extra={"code_files": changes.get("code_files", m["code_files"])})
    return tmp_path / "other"


def test_changed_code_is_refused_naming_the_file(pipeline, tmp_path):
    home, versions = pipeline
    v = versions["tokenizer"]
    files = ArtifactStore(home).get("tokenizer", v).manifest["code_files"]
    assert "assets/tokenization.py" in files and "ml/tokenizer.py" in files
    older = _recorded_as(home, tmp_path, "tokenizer", v, code_version="0123456789ab",
                         code_files={**files, "ml/tokenizer.py": "0" * 16})
    refused = rebuild_one(older, "tokenizer", v, log=lambda m: None)
    assert refused.status == "code_changed" and not refused.reproduced
    assert "ml/tokenizer.py (edited)" in refused.detail and "assets/tokenization.py" not in refused.detail
    assert "--allow-code-change" in refused.detail and "corrupt" not in refused.detail
    allowed = rebuild_one(older, "tokenizer", v, allow_code_change=True, log=lambda m: None)
    assert allowed.status == "identical" and allowed.detail.startswith("with the current code")


def test_config_the_asset_no_longer_accepts_is_a_config_change(pipeline, tmp_path):
    home, versions = pipeline
    v = versions["tokenizer"]
    m = ArtifactStore(home).get("tokenizer", v).manifest
    changed = _recorded_as(home, tmp_path, "tokenizer", v, config={**m["config"], "retired_option": 3})
    out = rebuild_one(changed, "tokenizer", v, log=lambda m: None)
    assert out.status == "config_changed" and "retired_option" in out.detail and "corrupt" not in out.detail
