"""ml/export without Dagster: export, quantize, parity, manifest, deterministic package, verify."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import onnx
import pytest

from ml.cli import main as lineage
from ml.export import build as bundle_build
from ml.export import bundle, tarball, verify
from ml.export import parity
from ml.fsutil import sha256_file
from ml.store import list_files
from tests.helpers.export_models import build_checkpoints, perturb_largest_weight, sources

FAST = dict(latency_runs=1, latency_batches=(1, 4), threads=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    dirs = build_checkpoints(tmp_path_factory.getbasetemp() / "checkpoints")
    manifest = bundle_build.build_bundle(sources(dirs), root / "out", bundle_build.BundleConfig(**FAST),
                              lineage={"nodes": [], "raw_docs": [], "landing": {}}, log=lambda m: None)
    return root / "out", manifest


def _repack(src_tar, dst_tar, edit=None, extra=None):
    """Copy a bundle tarball member by member, optionally editing one member or adding raw members."""
    with tarfile.open(src_tar, "r:gz") as src, tarfile.open(dst_tar, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if edit and m.name == edit[0]:
                data = edit[1](data)
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
        for info, data in extra or []:
            dst.addfile(info, io.BytesIO(data) if data is not None else None)


def test_every_model_exports_quantizes_and_passes_parity(built):
    out, manifest = built
    root = out / bundle.BUNDLE_DIR
    assert set(manifest["models"]) == {"lm", "embedding", "relation"}
    for name, m in manifest["models"].items():
        fp32, int8 = root / m["files"]["fp32"], root / m["files"]["int8"]
        graph = onnx.load(str(fp32))
        onnx.checker.check_model(graph)
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
        dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input]
        assert dims == [["batch", "sequence"], ["batch", "sequence"]], name
        assert int8.stat().st_size < 0.6 * fp32.stat().st_size  # tiny models: tokenizer-sized tables stay fp32-ish
        assert all(r["passed"] for r in m["parity"].values()), (name, m["parity"])
        own = {a["path"]: a["sha256"] for a in m["artifacts"]}
        assert own[m["files"]["int8"]] == sha256_file(int8) and f"{name}/tokenizer/tokenizer.json" in own
        q = m["quantization"]
        assert set(q["candidates"]) == {"per_channel", "per_tensor", "per_channel+fp32_embeddings",
                                        "per_tensor+fp32_embeddings"} and q["preprocess"].endswith("optimize")
        assert q["quantize_embeddings"]  # INT8 tables passed here, so the smaller file was kept
        for engine in bundle.ENGINES:  # latency is a run fact: in the run record beside the bundle, not in it
            assert bundle_build.read_latency(out)["models"][name]["latency_ms"]["b1s128"][engine] > 0
        assert "latency_ms" not in m and "seconds" not in m["export"] and "seconds" not in m["quantization"]
        # dynamic axes for real: a batch and length never seen at export time
        sess = parity.ort_session(int8)
        ids = np.full((3, 37), 20, dtype=np.int64)
        assert sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0].shape[0] == 3
    assert manifest["models"]["lm"]["source"]["asset"] == "lora_adapter"
    emb = np.load(root / "embedding" / "samples.npz")["reference"]
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)  # pooling + normalize inside the model
    for f in manifest["files"]:
        assert sha256_file(root / f["path"]) == f["sha256"]
    report = json.loads((root / bundle.PARITY).read_text())
    assert report["passed"] and report["thresholds"]["int8_lm_top1_agreement"] == 0.95
    stats = bundle_build.bundle_stats(manifest)
    assert stats["bytes.lm.int8"] < stats["bytes.lm.fp32"] and not any(k.startswith("latency") for k in stats)
    from ml.export.latency import latency_facts

    assert latency_facts(bundle_build.read_latency(out))["latency_ms.embedding.ort_int8.b4s128"] > 0


def test_perturbed_weights_fail_parity(built, tmp_path):
    out, manifest = built
    root = out / bundle.BUNDLE_DIR
    samples = parity.load_samples(root / "relation" / "samples.npz")
    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(perturb_largest_weight(root / "relation" / "model.onnx"))
    res = parity.check_onnx(wrong, "classifier", "fp32", samples, parity.Thresholds())
    assert not res["passed"] and "max_abs_diff" in res["problems"][0]
    assert parity.check_onnx(root / "relation" / "model.onnx", "classifier", "fp32", samples, parity.Thresholds())["passed"]


def test_package_is_deterministic_and_verifies(built, tmp_path, capsys):
    out, _ = built
    again = tmp_path / "again.tar.gz"
    tarball.pack_tar(out / bundle.BUNDLE_DIR, again)
    assert again.read_bytes() == (out / bundle.TARBALL).read_bytes()
    with tarfile.open(again) as tf:
        members = tf.getmembers()
    assert all(m.isreg() and m.mtime == 0 and m.uid == 0 for m in members)
    assert [m.name for m in members] == sorted(m.name for m in members)

    assert lineage(["verify", str(out / bundle.TARBALL)]) == 0
    text = capsys.readouterr().out
    assert "FAIL" not in text and "lm int8: parity on" in text and "verified" in text


def test_verify_rejects_tampering_traversal_and_links(built, tmp_path, capsys):
    good = built[0] / bundle.TARBALL

    tampered = tmp_path / "tampered.tar.gz"  # one flipped byte in a model file
    _repack(good, tampered, edit=("embedding/model.onnx", lambda b: b[:-10] + bytes([b[-10] ^ 1]) + b[-9:]))
    report = verify.verify_bundle(tampered)
    assert not report.ok and any("embedding/model.onnx: sha256" in msg for ok, msg in report.checks if not ok)
    assert lineage(["verify", str(tampered)]) == 1

    # a wrong model with a manifest rewritten to match: sha256 passes, the parity re-run does not
    rewritten = tmp_path / "rewritten.tar.gz"
    with tarfile.open(good) as tf:
        tf.extractall(tmp_path / "x", filter="data")
    (tmp_path / "x" / "lm" / "model.onnx").write_bytes(perturb_largest_weight(tmp_path / "x" / "lm" / "model.onnx"))
    man = json.loads((tmp_path / "x" / bundle.MANIFEST).read_text())
    man["files"] = list_files(tmp_path / "x")
    (tmp_path / "x" / bundle.MANIFEST).write_text(json.dumps(man))
    tarball.pack_tar(tmp_path / "x", rewritten)
    report = verify.verify_bundle(rewritten)
    failed = [msg for ok, msg in report.checks if not ok]
    assert len(failed) == 1 and failed[0].startswith("lm fp32: parity")

    outside = tmp_path / "evil.txt"
    for name, info in [
        ("traversal", tarfile.TarInfo("../evil.txt")),
        ("absolute", tarfile.TarInfo(str(outside))),
        ("symlink", tarfile.TarInfo("lm/tokenizer/link")),
        ("hardlink", tarfile.TarInfo("lm/hard")),
        ("device", tarfile.TarInfo("lm/dev")),
    ]:
        data = b"owned"
        if name == "symlink":
            info.type, info.linkname, data = tarfile.SYMTYPE, "/etc/passwd", None
        elif name == "hardlink":
            info.type, info.linkname, data = tarfile.LNKTYPE, "manifest.json", None
        elif name == "device":
            info.type, info.devmajor, info.devminor, data = tarfile.CHRTYPE, 1, 3, None
        else:
            info.size = len(data)
        bad = tmp_path / f"{name}.tar.gz"
        _repack(good, bad, extra=[(info, data)])
        report = verify.verify_bundle(bad)
        assert not report.ok and report.checks[-1][1].startswith("extraction refused"), (name, report.render())
        assert not outside.exists() and not (tmp_path / "evil.txt").exists()
        assert lineage(["verify", str(bad)]) == 1
    capsys.readouterr()


def test_skip_quantization(tmp_path_factory, tmp_path):
    dirs = build_checkpoints(tmp_path_factory.getbasetemp() / "checkpoints")
    relation = [s for s in sources(dirs) if s.name == "relation"]
    manifest = bundle_build.build_bundle(relation, tmp_path, bundle_build.BundleConfig(skip_quantization=True,
                                                                                     measure_latency=False),
                              lineage={}, log=lambda m: None)
    m = manifest["models"]["relation"]
    assert "int8" not in m["files"] and m["quantization"] is None and list(m["parity"]) == ["fp32"]
    assert not (tmp_path / bundle.BUNDLE_DIR / "relation" / bundle.INT8).exists()
    assert verify.verify_bundle(tmp_path / bundle.TARBALL).ok


def test_fp32_embedding_tables_leave_gather_unquantized(tmp_path_factory, tmp_path):
    dirs = build_checkpoints(tmp_path_factory.getbasetemp() / "checkpoints")
    lm = [s for s in sources(dirs) if s.name == "lm"]
    cfg = bundle_build.BundleConfig(quantize_embeddings="off", per_channel="on", measure_latency=False)
    manifest = bundle_build.build_bundle(lm, tmp_path, cfg, lineage={}, log=lambda m: None)
    q = manifest["models"]["lm"]["quantization"]
    assert q["chosen"] == "per_channel+fp32_embeddings" and q["quantize_embeddings"] is False
    graph = onnx.load(str(tmp_path / bundle.BUNDLE_DIR / manifest["models"]["lm"]["files"]["int8"]))
    inits = {i.name: i for i in graph.graph.initializer}
    gathers = [n for n in graph.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    assert gathers and all(inits[n.input[0]].data_type == onnx.TensorProto.FLOAT for n in gathers)
    assert any(n.op_type == "DynamicQuantizeLinear" for n in graph.graph.node)  # the MatMuls are INT8
