"""int4 weight-only LM (MatMulNBits) in the bundle: built beside fp32/INT8, its own parity gate at its
thresholds, size and latency figures, every operator left unquantized listed with the reason, a model
that cannot be quantized reported (not skipped), and `lineage verify` re-running the int4 parity.
Also: the manifest carries each model's validation (and test) metrics."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from ml.cli import main as lineage
from ml.export import build as bundle_build
from ml.export import bundle, tarball, verify
from ml.export import int4, parity
from tests.helpers.export_models import build_checkpoints, sources

METRICS = {"asset": "lora_adapter", "data_version": "ab" * 8, "val": {"loss": 2.5, "perplexity": 12.18},
           "test": {"loss": 2.6}, "best": {"metric": "loss", "step": 40}, "exported_weights": "last", "steps": 40}
FAST = dict(latency_runs=1, latency_batches=(1,), threads=1, per_channel="on", quantize_embeddings="on")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    dirs = build_checkpoints(tmp_path_factory.getbasetemp() / "checkpoints")
    lm, emb = sources(dirs)[:2]
    lm.metrics = METRICS
    out = tmp_path_factory.mktemp("int4") / "out"
    manifest = bundle_build.build_bundle([lm, emb], out, bundle_build.BundleConfig(**FAST),
                                         lineage={"nodes": [], "raw_docs": [], "landing": {}}, log=lambda m: None)
    return out, manifest


def test_lm_gets_an_int4_model_with_figures_and_a_passing_gate(built):
    out, manifest = built
    root = out / bundle.BUNDLE_DIR
    lm = manifest["models"]["lm"]
    q = lm["quantization_int4"]
    assert q["status"] == "quantized" and q["block_size"] == 32 and q["symmetric"] is False
    graph = onnx.load(str(root / lm["files"]["int4"]))
    ops = [n.op_type for n in graph.graph.node]
    # 2 layers x 7 projections + the LM head: every MatMul with a constant weight is 4-bit now
    assert ops.count("MatMulNBits") == q["quantized"] == 15
    assert lm["bytes"]["int4"] < 0.6 * lm["bytes"]["fp32"] and lm["bytes"]["int4_ratio"] < 0.6
    timing = bundle_build.read_latency(out)["models"]["lm"]  # latency is a run fact: the run record, not the bundle
    assert timing["latency_ms"]["b1s128"][int4.ENGINE] > 0 and timing["latency_setup"]["engines"][int4.ENGINE]
    assert "latency_ms" not in lm and "seconds" not in lm["export"]
    assert lm["parity"]["int4"]["passed"] and lm["parity"]["int4"]["argmax_agreement"] >= 0.9
    report = json.loads((root / bundle.PARITY).read_text())["models"]["lm"]["int4"]
    assert [c["metric"] for c in report["criteria"]] == ["argmax_agreement", "max_abs_diff"]
    assert bundle_build.bundle_stats(manifest)["bytes.lm.int4"] == lm["bytes"]["int4"]


def test_operators_left_unquantized_are_listed_with_the_reason(built):
    _, manifest = built
    left = manifest["models"]["lm"]["quantization_int4"]["not_quantized"]
    by_op = {}
    for n in left:
        by_op.setdefault(n["op"], []).append(n)
    # the attention products have no weight; the embedding table stays fp32 because of the opset
    assert len(by_op["MatMul"]) == 4 and all("no constant weight" in n["reason"] for n in by_op["MatMul"])
    assert [n["node"] for n in by_op["Gather"]] == ["/model/embed_tokens/Gather"]
    assert "opset 21" in by_op["Gather"][0]["reason"] and "opset 17" in by_op["Gather"][0]["reason"]
    q = manifest["models"]["lm"]["quantization_int4"]
    # auto: the INT8 table is tried first and kept because it passes the gate (the smaller file)
    assert set(q["candidates"]) == {"int8", "fp32"} and q["candidates"]["int8"]["passed"] and q["embeddings"] == "int8"
    assert "stored INT8, not int4" in by_op["Gather"][0]["reason"]
    emb = manifest["models"]["embedding"]
    assert "int4" not in emb["files"] and emb["quantization_int4"]["status"] == "not_applicable"
    assert "causal LMs only" in emb["quantization_int4"]["reason"]


def test_int4_gate_holds_at_its_thresholds_and_fails_just_past_them(built):
    out, manifest = built
    root = out / bundle.BUNDLE_DIR
    samples = parity.load_samples(root / "lm" / bundle.SAMPLES)
    m = manifest["models"]["lm"]["parity"]["int4"]
    top1, diff = m["argmax_agreement"], m["max_abs_diff"]
    assert diff > 0  # 4-bit weights do move the logits
    at = parity.Thresholds(int4_lm_top1_agreement=top1, int4_lm_max_logit_diff=diff)
    assert parity.check_onnx(root / "lm" / int4.FILE, "causal_lm", "int4", samples, at, threads=1)["passed"]
    tight = parity.Thresholds(int4_lm_top1_agreement=top1, int4_lm_max_logit_diff=diff * 0.999)
    res = parity.check_onnx(root / "lm" / int4.FILE, "causal_lm", "int4", samples, tight, threads=1)
    assert not res["passed"] and res["problems"] == [f"max_abs_diff = {diff:.6g}, needs <= {diff * 0.999:g}"]
    stricter = parity.Thresholds(int4_lm_top1_agreement=np.nextafter(top1, 2.0), int4_lm_max_logit_diff=diff)
    assert not parity.check_onnx(root / "lm" / int4.FILE, "causal_lm", "int4", samples, stricter, threads=1)["passed"]
    with pytest.raises(ValueError, match="causal LMs only"):
        parity.Thresholds().criteria("embedding", "int4")


def test_embedding_table_mode_fp32_keeps_the_table_and_says_why(built, tmp_path):
    out, manifest = built
    mdir = tmp_path / "lm"
    mdir.mkdir()
    (mdir / bundle.FP32).write_bytes((out / bundle.BUNDLE_DIR / "lm" / bundle.FP32).read_bytes())
    samples = parity.load_samples(out / bundle.BUNDLE_DIR / "lm" / bundle.SAMPLES)
    cfg = SimpleNamespace(int4=True, int4_block_size=32, int4_symmetric=False, int4_accuracy_level=0,
                          int4_embeddings="fp32", thresholds=parity.Thresholds())
    q, res = int4.build("causal_lm", mdir, samples, cfg, 1, lambda m: None, name="lm")
    assert q["embeddings"] == "fp32" and list(q["candidates"]) == ["fp32"] and res["passed"]
    gather = [n for n in q["not_quantized"] if n["op"] == "Gather"]
    assert len(gather) == 1 and "stays fp32" in gather[0]["reason"] and "opset 21" in gather[0]["reason"]
    # the INT8 table makes the int4 file smaller than with the fp32 table
    assert manifest["models"]["lm"]["bytes"]["int4"] < (mdir / int4.FILE).stat().st_size
    with pytest.raises(bundle.BundleError, match="int4_embeddings"):
        bundle_build.BundleConfig(int4_embeddings="int4")


def test_block_size_is_configurable_and_checked(built, tmp_path):
    out, manifest = built
    fp32 = out / bundle.BUNDLE_DIR / "lm" / bundle.FP32
    info = int4.quantize_int4(fp32, tmp_path / "b16.onnx", block_size=16, symmetric=True)
    node = next(n for n in onnx.load(str(tmp_path / "b16.onnx")).graph.node if n.op_type == "MatMulNBits")
    assert {a.name: a.i for a in node.attribute}["block_size"] == 16 and info["symmetric"] is True
    with pytest.raises(bundle.BundleError, match="power of two >= 16"):
        bundle_build.BundleConfig(int4_block_size=24)


def test_a_model_that_cannot_be_quantized_is_reported_and_fails_its_gate(built, tmp_path):
    out, _ = built
    mdir = tmp_path / "lm"
    mdir.mkdir()
    (mdir / "model.onnx").write_bytes(b"not an onnx graph")  # the quantizer cannot read it
    samples = parity.load_samples(out / bundle.BUNDLE_DIR / "lm" / bundle.SAMPLES)
    cfg = SimpleNamespace(int4=True, int4_block_size=32, int4_symmetric=False, int4_accuracy_level=0,
                          thresholds=parity.Thresholds())
    q, res = int4.build("causal_lm", mdir, samples, cfg, 1, lambda m: None, name="lm")
    assert q["status"] == "failed" and q["reason"].startswith("int4 quantization failed:")
    assert res["passed"] is False and res["problems"] == [q["reason"]] and not (mdir / int4.FILE).exists()
    q, res = int4.build("classifier", mdir, samples, cfg, 1, lambda m: None)
    assert q["status"] == "not_applicable" and res is None
    q, res = int4.build("causal_lm", mdir, samples, SimpleNamespace(int4=False), 1, lambda m: None)
    assert q == {"status": "off", "reason": "int4: false in the bundle config"} and res is None
    q, _ = int4.build("causal_lm", mdir, samples, SimpleNamespace(int4=True, skip_quantization=True), 1, print)
    assert q == {"status": "off", "reason": "skip_quantization: true (fp32 only)"}


def test_verify_reruns_the_int4_parity(built, capsys):
    out, _ = built
    assert lineage(["verify", str(out / bundle.TARBALL), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "lm int4: parity on" in text and "max_abs_diff=" in text


def test_manifest_carries_each_models_metrics(built, tmp_path):
    from ml.export.metrics import checkpoint_metrics
    from ml.store import ArtifactStore, BuildResult

    _, manifest = built
    assert manifest["models"]["lm"]["metrics"] == METRICS and manifest["models"]["embedding"]["metrics"] is None
    store = ArtifactStore(tmp_path / "home")

    def build(summary):
        def write(out):
            (out / "summary.json").write_text(json.dumps(summary))
            return BuildResult()
        return write

    base = store.put("lm_checkpoint", build({"val": {"perplexity": 9.0}, "steps": 600}), fingerprint="1" * 16,
                     code_version="t", config={}, upstream={})
    sft = store.put("lora_adapter", build({"val": {"loss": 1.0}, "test": {"loss": 1.1}, "best": {"step": 5}}),
                    fingerprint="2" * 16, code_version="t", config={}, upstream={"lm_checkpoint": base.data_version})
    got = checkpoint_metrics(store, "lora_adapter", sft.data_version)
    assert got["val"] == {"loss": 1.0} and got["test"] == {"loss": 1.1} and got["best"] == {"step": 5}
    assert got["base"]["data_version"] == base.data_version and got["base"]["val"] == {"perplexity": 9.0}
    assert checkpoint_metrics(store, "lm_checkpoint", base.data_version)["test"] is None  # no test split
