"""ml/rebuild.py without Dagster: run facts stay out of the data version, file-by-file comparison of two
versions (weights, tables, JSON), the documented tolerance at its threshold, and a code change named by file."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
from safetensors.numpy import save_file

from ml import run_record
from ml.rebuild import code_change, compare_versions
from ml.store import ArtifactStore, BuildResult


def _put(store: ArtifactStore, asset: str, files: dict, *, facts: dict | None = None, fp: str = "0" * 16,
         extra: dict | None = None):
    def build(out):
        for rel, write in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            write(out / rel)
        if facts:
            run_record.write_json(out, run_record.FACTS, facts)
        return BuildResult()

    return store.put(asset, build, fingerprint=fp, code_version="c", config={}, upstream={}, extra=extra)


def _weights(scale: float = 0.0):
    def write(path):
        save_file({"a.weight": np.ones((2, 3), np.float32) + np.float32(scale),
                   "b.bias": np.zeros(3, np.float32)}, str(path))
    return write


def _table(value: str):
    return lambda path: pl.DataFrame({"id": [1, 2, 3], "text": ["x", value, "z"], "score": [0.5, 0.25, 1.0]}).write_parquet(path)


def _json(obj):
    return lambda path: path.write_text(json.dumps(obj))


def test_run_facts_stay_out_of_the_data_version_but_are_verified(tmp_path):
    store = ArtifactStore(tmp_path / "h")
    one = _put(store, "x", {"m.json": _json({"loss": 1.0})}, facts={"build_seconds": 1.5, "host": "a"})
    two = _put(ArtifactStore(tmp_path / "h2"), "x", {"m.json": _json({"loss": 1.0})}, facts={"build_seconds": 9.0})
    assert one.data_version == two.data_version  # same content, different runs: same version
    assert {f["path"] for f in one.manifest["files"]} == {"m.json", "_run/facts.json"}
    path = one.path / "_run" / "facts.json"  # a tampered run record is still caught on read
    path.chmod(0o644)
    path.write_text('{"build_seconds": 0.1}')
    assert [p["path"] for p in store.verify("x", one.data_version)] == ["_run/facts.json"]


def test_identical_weights_table_json_and_run_record_ignored(tmp_path):
    files = {"model/model.safetensors": _weights(), "val.parquet": _table("y"), "summary.json": _json({"a": 1})}
    a = _put(ArtifactStore(tmp_path / "a"), "m", files, facts={"build_seconds": 1.0})
    b = _put(ArtifactStore(tmp_path / "b"), "m", files, facts={"build_seconds": 2.0})
    status, detail, diffs = compare_versions(a, b)
    assert status == "identical" and diffs == [] and "3 content files" in detail


def test_differences_are_described_per_kind(tmp_path):
    a = _put(ArtifactStore(tmp_path / "a"), "m", {"w.safetensors": _weights(), "t.parquet": _table("y"),
                                                  "s.json": _json({"val": {"loss": 1.0}, "steps": 3})})
    b = _put(ArtifactStore(tmp_path / "b"), "m", {"w.safetensors": _weights(0.25), "t.parquet": _table("CHANGED"),
                                                  "s.json": _json({"val": {"loss": 1.5}, "steps": 3}),
                                                  "new.txt": lambda p: p.write_text("n")})
    status, detail, diffs = compare_versions(a, b)
    assert status == "differs"
    by = {d["path"]: d for d in diffs}
    assert by["w.safetensors"]["differing_tensors"] == {"a.weight": 0.25} and by["w.safetensors"]["max_abs_diff"] == 0.25
    assert by["t.parquet"]["rows"] == [3, 3] and by["t.parquet"]["n_differing_rows"] == 1
    assert by["t.parquet"]["sample"] == [{"row": 1, "original": {"text": "y"}, "rebuild": {"text": "CHANGED"}}]
    assert by["s.json"]["keys"] == [".val.loss: 1.0 vs 1.5"]
    assert by["new.txt"]["missing"] == "in the rebuild, not in the original"
    assert "a.weight (0.25)" in detail and "4 of 4 content files differ" in detail


def test_documented_tolerance_is_a_threshold(tmp_path):
    rep = {"reproducibility": {"tolerance": {"atol": 0.25}, "files": ["w."], "why": "test: a non-deterministic op"}}
    a = _put(ArtifactStore(tmp_path / "a"), "m", {"w.safetensors": _weights()}, extra=rep)
    at = _put(ArtifactStore(tmp_path / "b"), "m", {"w.safetensors": _weights(0.25)})
    above = _put(ArtifactStore(tmp_path / "c"), "m", {"w.safetensors": _weights(0.26)})
    assert compare_versions(a, at)[0] == "within_tolerance"  # |diff| == atol passes
    assert compare_versions(a, above)[0] == "differs"
    plain = _put(ArtifactStore(tmp_path / "d"), "m", {"w.safetensors": _weights()})
    assert compare_versions(plain, at)[0] == "differs"  # no documented tolerance: bytes must match


def test_code_change_names_the_files():
    recorded = {"code_version": "aaa", "code_files": {"ml/x.py": "1", "ml/y.py": "2", "assets/z.py": "3"}}
    assert code_change(recorded, "aaa", {}) is None
    msg = code_change(recorded, "bbb", {"ml/x.py": "1", "ml/y.py": "9", "ml/new.py": "4", "assets/z.py": "3"})
    assert "ml/y.py (edited)" in msg and "ml/new.py (added)" in msg and "ml/x.py" not in msg
    assert "cannot be named" in code_change({"code_version": "aaa"}, "bbb", {})
