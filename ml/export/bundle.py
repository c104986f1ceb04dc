"""What an ONNX bundle is: its layout, file names and errors, and reading a stored one.

Latency and export times are run facts (``_run/latency.json``), never bundle content. Layout: ml/FORMATS.md,
"onnx_bundle", and DESIGN.md, "Module notes"; building: build.py; the tarball: tarball.py; checking: verify.py.
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
