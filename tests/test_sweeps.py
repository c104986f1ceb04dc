"""Sweeps: the points of a grid / random space, and a Dagster sweep of 3 learning rates on a tiny LM
(one versioned checkpoint per point with lineage, sweep_results ranked by val loss, the best point
selected for lm_checkpoint by train.from_sweep and recorded as a lineage edge)."""

from __future__ import annotations

import hashlib
import json
import shutil

import dagster as dg
import pytest

from ml import sweeps

LM = {"model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "seq_len": 32},
      "train": {"max_steps": 20, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "eval_every": 10, "eval_batches": 2,
                "save_every": 10, "log_every": 5},
      "checks": {"min_loss_drop": 0.0}}
LRS = [1e-4, 3e-3, 3e-2]


def test_grid_is_every_combination_and_random_is_seeded():
    sw = sweeps.SweepSettings(name="g", base=LM, grid={"train.lr": [0.1, 0.2], "train.batch_size": [4, 8, 16]})
    pts = sweeps.points(sw)
    assert [p["point"] for p in pts] == [f"p{i}" for i in range(6)]
    assert {(p["settings"]["train"]["lr"], p["settings"]["train"]["batch_size"]) for p in pts} == \
        {(a, b) for a in (0.1, 0.2) for b in (4, 8, 16)}
    assert all(p["settings"]["model"] == LM["model"] for p in pts)  # the rest of base is kept
    rnd = sweeps.SweepSettings(name="r", base=LM, random={"n": 5, "seed": 3, "params": {
        "train.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "train.warmup_steps": [1, 2, 5]}})
    a, b = sweeps.points(rnd), sweeps.points(rnd)
    assert [p["params"] for p in a] == [p["params"] for p in b] and len(a) == 5
    assert all(1e-4 <= p["params"]["train.lr"] <= 1e-2 and p["params"]["train.warmup_steps"] in (1, 2, 5) for p in a)


def test_a_bad_point_or_space_is_refused_before_training():
    with pytest.raises(ValueError, match="p1"):  # warmup must stay below max_steps
        sweeps.points(sweeps.SweepSettings(name="b", base=LM, grid={"train.warmup_steps": [2, 20]}))
    with pytest.raises(ValueError, match="exactly one of grid or random"):
        sweeps.SweepSettings(name="b", base=LM)
    with pytest.raises(ValueError, match="not a training asset"):
        sweeps.SweepSettings(name="b", asset="tokenizer", grid={"train.lr": [1]})


def test_rank_orders_by_direction_and_puts_missing_values_last():
    res = [{"point": "p0", "val": {"loss": 2.0}}, {"point": "p1", "val": {"loss": float("nan")}},
           {"point": "p2", "val": {"loss": 1.5}}]
    assert [(r["point"], r["rank"], r["best"]) for r in sweeps.rank(res, "loss", "min")] == \
        [("p2", 1, True), ("p0", 2, False), ("p1", 3, False)]
    assert [r["point"] for r in sweeps.rank(res, "loss", "max")] == ["p0", "p2", "p1"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    from ml.store import ArtifactStore, BuildResult
    from resources import ArtifactStoreResource, CatalogResource, TorchDevice
    from tests.helpers.training import make_inputs

    root = tmp_path_factory.mktemp("sweep")
    home = root / "home"
    (home / "dagster").mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LINEAGE_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(home / "dagster"))
        mp.setenv("LINEAGE_TRACKING", "off")  # MLflow is tested in test_evaluation.py
        inputs = make_inputs(root / "up", n_docs=120)
        store = ArtifactStore(home)
        resources = {"store": ArtifactStoreResource(), "catalog": CatalogResource(),
                     "torch_device": TorchDevice(device="cpu", seed=0, threads=1)}
        with dg.instance_for_test() as instance:
            for name in ("tokenizer", "tokenized_corpus"):
                v = store.put(name, lambda out, src=inputs[name]: (shutil.copytree(src, out, dirs_exist_ok=True),
                                                                   BuildResult())[1],
                              fingerprint=hashlib.sha256(name.encode()).hexdigest()[:16], code_version="test",
                              config={}, upstream={})
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    asset_key=name, tags={"dagster/data_version": v.data_version}))
            from assets.sweeps import model_sweep
            from assets.training import lm_checkpoint

            sweep_cfg = {"name": "lm_lr", "asset": "lm_checkpoint", "base": LM, "grid": {"train.lr": LRS},
                         "metric": "loss"}
            result = dg.materialize([model_sweep], instance=instance, resources=resources, run_config={
                "ops": {"model_sweep": {"ops": {"sweep_points": {"config": sweep_cfg}}}}})
            plain = dg.materialize([lm_checkpoint], instance=instance, resources=resources, run_config={
                "ops": {"lm_checkpoint": {"config": LM}}})  # the settings of point p1 (lr 3e-3)
            chosen = dg.materialize([lm_checkpoint], instance=instance, resources=resources, run_config={
                "ops": {"lm_checkpoint": {"config": {**LM, "train": {**LM["train"], "from_sweep": "lm_lr"}}}}})
            yield {"home": home, "result": result, "chosen": chosen, "plain": plain, "store": store}


def test_sweep_of_three_learning_rates_ranks_versioned_points(swept):
    from ml.catalog import Catalog

    res = swept["result"]
    assert res.success
    steps = {e.step_key for e in res.all_events if e.is_step_success}
    assert {f"model_sweep.sweep_train[p{i}]" for i in range(3)} <= steps  # one mapped step per point
    cat = Catalog(swept["home"])
    rows = cat.query("SELECT point, params, model_version, metric, value, rank, best FROM sweep_results "
                     "WHERE sweep = 'lm_lr' ORDER BY rank").to_dicts()
    assert [r["rank"] for r in rows] == [1, 2, 3] and [r["best"] for r in rows] == [True, False, False]
    assert sorted(json.loads(r["params"])["train.lr"] for r in rows) == LRS
    assert [r["value"] for r in rows] == sorted(r["value"] for r in rows)  # val loss, lower is better
    for r in rows:  # each point: a stored lm_checkpoint version trained with its lr, lineage to its inputs
        v = swept["store"].open("lm_checkpoint", r["model_version"])
        assert v.manifest["config"]["train"]["lr"] == json.loads(r["params"])["train.lr"]
        summary = json.loads((v.path / "summary.json").read_text())
        assert summary["val"]["loss"] == pytest.approx(r["value"])
        edges = cat.query("SELECT upstream_asset FROM lineage_edges WHERE asset = 'lm_checkpoint' AND data_version = ?",
                          [r["model_version"]])["upstream_asset"].to_list()
        # the best point is also the lm_checkpoint that train.from_sweep published: one more edge, to the sweep
        assert set(edges) == {"tokenizer", "tokenized_corpus"} | ({"model_sweep"} if r["best"] else set())
    assert len({r["model_version"] for r in rows}) == 3
    md = next(e.event_specific_data.materialization for e in res.get_asset_materialization_events())
    assert len(md.metadata["ranking"].value.records) == 3


def test_best_point_selected_by_config_is_the_pipeline_model_with_lineage(swept):
    from ml.catalog import Catalog

    cat = Catalog(swept["home"])
    best = cat.query("SELECT data_version, model_version FROM sweep_results WHERE sweep = 'lm_lr' AND best").row(
        0, named=True)
    mat = next(e.event_specific_data.materialization for e in swept["chosen"].get_asset_materialization_events())
    assert mat.tags["dagster/data_version"] == best["model_version"]  # the point's content, as it is
    edges = dict(cat.query("SELECT upstream_asset, upstream_version FROM lineage_edges WHERE asset = 'lm_checkpoint' "
                           "AND data_version = ? AND upstream_asset = 'model_sweep'", [best["model_version"]]).rows())
    assert edges == {"model_sweep": best["data_version"]}


def test_a_point_with_the_assets_own_settings_is_a_cache_hit_of_that_asset(swept):
    from ml.catalog import Catalog

    p1 = Catalog(swept["home"]).query("SELECT model_version FROM sweep_results WHERE sweep = 'lm_lr' AND params = ?",
                                      [json.dumps({"train.lr": 3e-3})]).item()
    mat = next(e.event_specific_data.materialization for e in swept["plain"].get_asset_materialization_events())
    assert mat.metadata["cache_hit"].value is True and mat.tags["dagster/data_version"] == p1
