"""What an ONNX bundle is: its layout, file names and errors (ml/FORMATS.md, ONNX bundle).

Layout of a bundle (``bundle/`` in the store's version directory, and the members of
``bundle.tar.gz`` beside it)::

    manifest.json                 models, files (sha256, bytes), parity, versions, lineage
    parity.json                   per model, per precision: metrics, criteria, passed
    <model>/model.onnx            fp32
    <model>/model.int8.onnx       INT8 dynamic quantization (absent with skip_quantization)
    <model>/model.int4.onnx       causal LMs: int4 weight-only MatMulNBits (ml/export/int4.py; absent
                                  with int4: false; every other model's manifest entry says why not)
    <model>/tokenizer/            the tokenizer the model was trained with
    <model>/samples.npz           input_ids, attention_mask (graph models: their named inputs and
                                  feed_names), PyTorch fp32 reference outputs, texts

Latency and export times are run facts: they live in the version's run record
(``_run/latency.json``, ml/run_record.py), not in the bundle. Building: build.py; the tarball:
tarball.py; checking one: verify.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ml.store import MANIFEST

FORMAT = "lineage-forge/onnx-bundle/1"
BUNDLE_DIR = "bundle"
TARBALL = "bundle.tar.gz"
PARITY = "parity.json"
LATENCY = "latency.json"  # in the run record (_run/), per model: latency_ms, latency_setup, export seconds
FP32, INT8, SAMPLES, TOKENIZER = "model.onnx", "model.int8.onnx", "samples.npz", "tokenizer"
ENGINES = ("torch_fp32", "ort_fp32", "ort_int8")

__all__ = ["FORMAT", "BUNDLE_DIR", "TARBALL", "PARITY", "LATENCY", "MANIFEST", "FP32", "INT8", "SAMPLES", "TOKENIZER",
           "ENGINES", "BundleError", "UnsafeBundleError", "read_manifest", "read_parity"]


class BundleError(ValueError):
    pass


class UnsafeBundleError(BundleError):
    """A tarball member that could write outside the extraction directory or is not a plain file."""


def read_manifest(version_dir: Path) -> dict[str, Any]:
    """The bundle manifest of a stored onnx_bundle version."""
    return json.loads((Path(version_dir) / BUNDLE_DIR / MANIFEST).read_text("utf-8"))


def read_parity(version_dir: Path) -> dict[str, Any]:
    """The parity report (parity.json) of a stored onnx_bundle version."""
    return json.loads((Path(version_dir) / BUNDLE_DIR / PARITY).read_text("utf-8"))
