"""INT8 dynamic quantization with ``onnxruntime.quantization`` (pre-processing, per-tensor/per-channel, embedding tables).

The fp32 model is never modified; ``"auto"`` choices are made by parity on the sample inputs, and the
choice and its scores go to the parity report. The steps and the measured figures: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

PER_CHANNEL_MODES = ("auto", "on", "off")


class QuantizationError(RuntimeError):
    pass


@contextlib.contextmanager
def _quiet(cwd: Path):
    """ORT's symbolic shape inference writes ``sym_shape_infer_temp.onnx`` (+ its weights) into the
    working directory when it gives up, and logs warnings through the root logger: contain both."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.chdir(cwd):
            yield
    finally:
        root.setLevel(level)


def preprocess(fp32_path: Path, out_path: Path) -> str:
    """Shape inference + optimization before quantization; returns the method that worked."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    attempts = (("symbolic_shape+optimize", {"auto_merge": True}),
                ("onnx_shape+optimize", {"skip_symbolic_shape": True}))
    errors = []
    src, dst = str(Path(fp32_path).resolve()), str(Path(out_path).resolve())  # before any chdir
    with tempfile.TemporaryDirectory(prefix="quant-pre-") as tmp:
        for name, kwargs in attempts:
            try:
                with _quiet(Path(tmp)):
                    quant_pre_process(src, dst, **kwargs)
                return name
            except Exception as exc:  # ORT raises bare Exception when shape inference is incomplete
                errors.append(f"{name}: {exc}")
    raise QuantizationError(f"pre-processing {fp32_path} for quantization failed: " + "; ".join(errors))


def quantize_int8(pre_path: Path, out_path: Path, *, per_channel: bool, reduce_range: bool = False,
                  quantize_embeddings: bool = True) -> dict[str, Any]:
    """Dynamic INT8 quantization of a pre-processed model; onnx.checker must pass on the result.
    ``quantize_embeddings=False`` quantizes the MatMuls only: Gather (embedding tables) stays fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    t0 = time.perf_counter()
    src, dst = str(Path(pre_path).resolve()), str(Path(out_path).resolve())  # before any chdir
    with tempfile.TemporaryDirectory(prefix="quant-") as tmp, _quiet(Path(tmp)):
        quantize_dynamic(
            src, dst, per_channel=per_channel,
            reduce_range=reduce_range, weight_type=QuantType.QInt8,
            op_types_to_quantize=None if quantize_embeddings else ["MatMul"],
        )
    onnx.checker.check_model(str(out_path), full_check=True)
    return {"per_channel": per_channel, "reduce_range": reduce_range, "weight_type": "QInt8",
            "quantize_embeddings": quantize_embeddings,
            "activation_type": "QUInt8 (dynamic)", "seconds": round(time.perf_counter() - t0, 3)}


def candidates(mode: str, what: str = "per_channel") -> list[bool]:
    """Settings to try for an ``auto | on | off`` mode (``per_channel``, ``quantize_embeddings``)."""
    if mode not in PER_CHANNEL_MODES:
        raise ValueError(f"{what} must be one of {PER_CHANNEL_MODES}, got {mode!r}")
    return {"auto": [True, False], "on": [True], "off": [False]}[mode]


def candidate_name(per_channel: bool, quantize_embeddings: bool) -> str:
    return ("per_channel" if per_channel else "per_tensor") + ("" if quantize_embeddings else "+fp32_embeddings")
