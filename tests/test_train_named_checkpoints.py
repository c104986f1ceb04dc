"""Named checkpoints: checkpoint-latest / checkpoint-best point at real step checkpoints; train.resume_from
accepts a path or a name (also another stored version's best) and continues that run exactly;
train.init_from starts a second stage from another checkpoint's weights (narrower corpus), and the
Dagster asset records the parent version as a lineage edge."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from ml.store import ArtifactStore, BuildResult
from ml.train import checkpointing as ckpt
from ml.train.config import DeviceSettings, LoopSettings
from tests.helpers.training import RESUME_CFG, TINY_LOOP, inputs, train_one  # noqa: F401  (module fixture)

CPU = DeviceSettings(device="cpu", seed=7, threads=1)
# best by token accuracy is the first evaluation (step 10) while the last is 30: the two names differ
CFG = {**RESUME_CFG, "train": {**RESUME_CFG["train"], "max_steps": 30, "grad_accum_steps": 1, "keep_last": 1,
                               "best_metric": "token_accuracy", "best_mode": "max"}}


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def first(inputs, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("named")
    summary = train_one("lm_checkpoint", CFG, inputs, root / "out", root / "work", CPU)
    return root, summary


def test_latest_and_best_point_at_real_step_checkpoints(first):
    root, summary = first
    work = root / "work"
    assert summary["best"]["step"] == 10 and summary["steps"] == 30
    for name, step in (("latest", 30), ("best", 10)):
        link = work / f"checkpoint-{name}"
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # relative: the work dir can move
        target = link.resolve()
        assert target == (work / "checkpoints" / f"step-{step:08d}").resolve()
        assert ckpt.verify(target)["step"] == step  # a whole, intact checkpoint, not a copy or a stub
    assert [s for s, _ in ckpt.step_dirs(work)] == [10, 30]  # keep_last=1 kept the best beside the last


def test_resume_from_a_path_continues_the_run_exactly(first, inputs, tmp_path):  # noqa: F811
    root, _ = first
    # the 30-step run again, but starting from the step-10 checkpoint of the first run (a plain path)
    out = tmp_path / "out"
    summary = train_one("lm_checkpoint", {**CFG, "train": {**CFG["train"], "resume_from": str(
        root / "work" / "checkpoints" / "step-00000010")}}, inputs, out, tmp_path / "work", CPU)
    assert summary["resumed_from_step"] == 10 and summary["steps"] == 30
    assert summary["resume_from"]["step"] == 10 and summary["resume_from"]["name"] is None
    assert _same(_weights(out), _weights(root / "out"))  # bit-identical to the uninterrupted run
    # the checkpoint was adopted: this run's own names point at its own directories
    assert (tmp_path / "work" / "checkpoint-latest").resolve().parent == (tmp_path / "work" / "checkpoints").resolve()
    assert ckpt.named(tmp_path / "work", "best").name == "step-00000010"


@pytest.mark.parametrize("name,step", [("checkpoint-latest", 30), ("checkpoint-best", 10)])
def test_resume_from_each_name(first, inputs, tmp_path, name, step):  # noqa: F811
    root, _ = first
    ref = str(root / "work" / name)  # the link itself
    cfg = {**CFG, "train": {**CFG["train"], "max_steps": 40, "resume_from": ref}}
    summary = train_one("lm_checkpoint", cfg, inputs, tmp_path / "out", tmp_path / "work", CPU)
    assert summary["resumed_from_step"] == step and summary["steps"] == 40
    assert summary["resume_from"]["name"] == name.removeprefix("checkpoint-")
    hist = [json.loads(l) for l in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    before = [json.loads(l) for l in (root / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in hist if r["step"] <= step] == [r for r in before if r["step"] <= step]  # its history kept
    assert max(r["step"] for r in hist) == 40


def test_resume_beyond_max_steps_and_bad_references_fail_clearly(first, inputs, tmp_path):  # noqa: F811
    root, _ = first
    cfg = {**CFG, "train": {**CFG["train"], "resume_from": str(root / "work" / "checkpoint-latest")}}
    with pytest.raises(ValueError, match="not below train.max_steps=30"):
        train_one("lm_checkpoint", cfg, inputs, tmp_path / "out", tmp_path / "work", CPU)
    with pytest.raises(ckpt.CheckpointRefError, match="no such checkpoint"):
        ckpt.resolve_ref(str(tmp_path / "nowhere"), asset="lm_checkpoint")
    with pytest.raises(ckpt.CheckpointRefError, match="after ':' expected latest or best"):
        ckpt.resolve_ref("lm_checkpoint@abc:newest", asset="lm_checkpoint", store=ArtifactStore(tmp_path / "h"))
    with pytest.raises(ValueError, match="not both"):
        LoopSettings(resume_from="best", init_from="best")


def _publish(home: Path, work_src: Path, out_src: Path, fingerprint: str) -> str:
    """A stored lm_checkpoint version whose training work directory is work_src (as the asset lays it out)."""
    store = ArtifactStore(home)

    def build(out: Path) -> BuildResult:
        shutil.copytree(out_src, out, dirs_exist_ok=True)
        return BuildResult()

    v = store.put("lm_checkpoint", build, fingerprint=fingerprint, code_version="test", config={}, upstream={})
    shutil.copytree(work_src, home / "work" / "lm_checkpoint" / fingerprint, symlinks=True)
    return v.data_version


def test_stored_version_names_resolve_to_its_work_directory(first, tmp_path):
    root, _ = first
    home = tmp_path / "home"
    fp = hashlib.sha256(b"first").hexdigest()[:16]
    version = _publish(home, root / "work", root / "out", fp)
    store = ArtifactStore(home)
    for ref, step, name in ((f"lm_checkpoint@{version[:8]}:best", 10, "best"),
                            (f"lm_checkpoint@{version}:latest", 30, "latest"),
                            (f"lm_checkpoint@{version[:8]}", 10, "best"),  # default: best
                            ("best", 10, "best"), ("checkpoint-latest", 30, "latest")):  # newest stored version
        r = ckpt.resolve_ref(ref, asset="lm_checkpoint", store=store)
        assert (r.step, r.name, r.asset, r.data_version) == (step, name, "lm_checkpoint", version), ref
        assert r.path == (home / "work" / "lm_checkpoint" / fp / "checkpoints" / f"step-{step:08d}").resolve()
    # a path inside the store's work tree is traced back to its version too
    r = ckpt.resolve_ref(str(home / "work" / "lm_checkpoint" / fp), asset="lm_checkpoint", store=store)
    assert (r.step, r.data_version) == (30, version)
    with pytest.raises(ckpt.CheckpointRefError, match="no stored version of lora_adapter"):
        ckpt.resolve_ref("best", asset="lora_adapter", store=store)


def _narrow_corpus(inputs: dict, root: Path) -> str:
    """A second-stage corpus: only the documents about two of the animals (a narrower mix)."""
    from ml.tokenized_corpus import build_tokenized_corpus
    from tests.helpers.training import make_texts

    texts = [t for t in make_texts(400, seed=3) if "owl" in t or "fox" in t]
    frame = lambda ts, s: pl.DataFrame({"doc_id": [f"{s}{i}" for i in range(len(ts))],
                                        "source": ["narrow.jsonl"] * len(ts), "text": ts})
    out = root / "narrow_corpus"
    build_tokenized_corpus({"train": frame(texts[16:], "t"), "val": frame(texts[:16], "v")},
                           Path(inputs["tokenizer"]), out)
    return str(out)


def test_two_stage_run_starts_from_the_first_stage_best(first, inputs, tmp_path):  # noqa: F811
    root, stage1 = first
    narrow = {**inputs, "tokenized_corpus": _narrow_corpus(inputs, tmp_path)}
    stage2 = {**CFG, "train": {**CFG["train"], "max_steps": 20, "best_metric": None, "best_mode": None,
                               "init_from": str(root / "work" / "checkpoint-best")}}
    two = train_one("lm_checkpoint", stage2, narrow, tmp_path / "two", tmp_path / "two_work", CPU)
    scratch = {**stage2, "train": {**stage2["train"], "init_from": None}}
    cold = train_one("lm_checkpoint", scratch, narrow, tmp_path / "cold", tmp_path / "cold_work", CPU)
    assert two["init_from"]["step"] == 10 and two["init_from"]["name"] == "best"
    assert two["resumed_from_step"] is None and two["steps"] == 20  # a new run: step 0, fresh optimizer
    # it starts where stage one left its best weights, well below a model trained from scratch
    assert two["first_train_loss"] < 0.85 * cold["first_train_loss"]
    assert two["val"]["loss"] < cold["val"]["loss"]
    rows = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert min(r["step"] for r in rows) > 0 and max(r["step"] for r in rows) == 20  # no stage-one history
    # with a vanishing learning rate the published weights are the stage-one best's, to the last digit
    still = {**stage2, "train": {**stage2["train"], "lr": 1e-12, "weight_decay": 0.0}}
    train_one("lm_checkpoint", still, narrow, tmp_path / "still", tmp_path / "still_work", CPU)
    best = load_file(str(root / "work" / "checkpoint-best" / "model.safetensors"))
    got = _weights(tmp_path / "still")
    assert all(torch.allclose(got[k], best[k], atol=1e-8, rtol=0) for k in best)
    assert not all(torch.allclose(_weights(tmp_path / "cold")[k], best[k], atol=1e-3) for k in best)


def test_init_from_a_checkpoint_of_another_model_is_refused(first, inputs, tmp_path):  # noqa: F811
    root, _ = first
    other = {**CFG, "model": {**CFG["model"], "hidden_size": 48},
             "train": {**CFG["train"], "init_from": str(root / "work" / "checkpoint-best")}}
    with pytest.raises(ckpt.CheckpointError, match="train.init_from .*shape"):
        train_one("lm_checkpoint", other, inputs, tmp_path / "out", tmp_path / "work", CPU)


def test_asset_records_the_parent_version_as_a_lineage_edge(home, tmp_path):
    from ml.catalog import Catalog
    from tests.helpers.training_assets import mats_of, publish_upstream, run_assets
    from tests.helpers.training import TINY

    with dg.instance_for_test() as instance:
        up = publish_upstream(home, instance, tmp_path / "up")
        first = mats_of(run_assets(instance, ["lm_checkpoint"], {"lm_checkpoint": TINY["lm_checkpoint"]}))["lm_checkpoint"]
        parent = first.tags["dagster/data_version"]
        stage2 = {**TINY["lm_checkpoint"], "train": {**TINY["lm_checkpoint"]["train"], "max_steps": 20,
                                                     "init_from": f"lm_checkpoint@{parent[:8]}:best"}}
        second = mats_of(run_assets(instance, ["lm_checkpoint"], {"lm_checkpoint": stage2}))["lm_checkpoint"]
        child = second.tags["dagster/data_version"]
        assert child != parent and second.metadata["init_from"].value["data_version"] == parent
        edges = Catalog(home).query("SELECT upstream_asset, upstream_version FROM lineage_edges WHERE asset = "
                                    "'lm_checkpoint' AND data_version = ? ORDER BY 1", [child]).rows()
        assert edges == [("lm_checkpoint", parent), ("tokenized_corpus", up["tokenized_corpus"]),
                         ("tokenizer", up["tokenizer"])]
        summary = json.loads((ArtifactStore(home).get("lm_checkpoint", child).path / "summary.json").read_text())
        assert summary["init_from"]["asset"] == "lm_checkpoint" and summary["init_from"]["name"] == "best"

        # resume_from "latest": the newest stored version (the second stage, 20 steps) continued to 40
        more = {**stage2, "train": {**stage2["train"], "max_steps": 40, "init_from": None, "resume_from": "latest"}}
        third = mats_of(run_assets(instance, ["lm_checkpoint"], {"lm_checkpoint": more}))["lm_checkpoint"]
        assert third.metadata["resumed_from_step"].value == 20
        assert third.metadata["resume_from"].value["data_version"] == child
        bad = {**stage2, "train": {**stage2["train"], "init_from": "lm_checkpoint@ffff:best"}}
        result = run_assets(instance, ["lm_checkpoint"], {"lm_checkpoint": bad}, raise_on_error=False)
        assert not result.success
        msg = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message
        assert "train.init_from" in msg and "no stored version of lm_checkpoint starts with 'ffff'" in msg
