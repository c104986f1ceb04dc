"""int4 weight-only quantization of the causal LMs with ONNX Runtime's MatMulNBits quantizer.

What is not quantized is reported with the reason (``audit``), never skipped in silence; the embedding
table stays INT8 or fp32 (int4 Gather needs opset 21, the bundle exports 17). Details, figures and the
gate: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

KINDS = ("causal_lm",)
TABLE_MODES = {"auto": ("int8", "fp32"), "int8": ("int8",), "fp32": ("fp32",)}
FILE = "model.int4.onnx"
ENGINE = "ort_int4"
INT4_GATHER_OPSET = 21


class Int4Error(RuntimeError):
    pass


def not_applicable(kind: str) -> str | None:
    """Why a model of this kind gets no int4 file (None: it does)."""
    if kind in KINDS:
        return None
    return (f"int4 weight-only quantization is built for the causal LMs only (kinds {list(KINDS)}); "
            f"this {kind} model ships fp32 and INT8")


def check_block_size(block_size: int) -> int:
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"int4_block_size must be a power of two >= 16, got {block_size}")
    return block_size


@contextlib.contextmanager
def _quiet():
    """The quantizer logs one INFO line per node and configures the root logger: keep it to errors."""
    names = ["onnxruntime.quantization.matmul_nbits_quantizer", "onnxruntime.quantization"]
    loggers = [logging.getLogger(n) for n in names] + [logging.getLogger()]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def quantize_int4(fp32_path: Path, out_path: Path, *, block_size: int = 32, symmetric: bool = False,
                  accuracy_level: int = 0) -> dict[str, Any]:
    """Write the int4 model of ``fp32_path`` to ``out_path``; returns settings, timing and the audit."""
    import onnx

    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                     MatMulNBitsQuantizer)
    except ImportError as exc:  # onnxruntime >= 1.22 needs onnx_ir for this module
        raise Int4Error(f"onnxruntime's MatMulNBits quantizer cannot be imported: {exc}") from exc
    check_block_size(block_size)
    t0 = time.perf_counter()
    fp32 = onnx.load(str(fp32_path))
    cfg = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric,
                                       accuracy_level=accuracy_level or None, op_types_to_quantize=("MatMul",))
    with _quiet():
        quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32_path)), algo_config=cfg)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out_path), use_external_data_format=False)
    onnx.checker.check_model(str(out_path))  # contrib ops (com.microsoft) are not shape-checked by onnx
    report = audit(fp32, onnx.load(str(out_path)))
    if not report["quantized"]:
        raise Int4Error("no MatMul has a constant weight to quantize: " +
                        "; ".join(f"{n['node']}: {n['reason']}" for n in report["not_quantized"][:3]))
    return {"algorithm": "MatMulNBits (ORT default, round-to-nearest)", "bits": 4, "block_size": block_size,
            "symmetric": symmetric, "accuracy_level": accuracy_level or None, "weights": "int4, one fp32 scale "
            "per block" + ("" if symmetric else " + a 4-bit zero point"), "activations": "fp32",
            "seconds": round(time.perf_counter() - t0, 3), **report}


def int8_tables(int4_path: Path, out_path: Path) -> Path:
    """The int4 model with its embedding tables (Gather over a 2-D constant) stored INT8: ORT dynamic
    quantization restricted to Gather (per-tensor scale), as the INT8 model's tables are."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ml.export.quantize import _quiet

    src, dst = str(Path(int4_path).resolve()), str(Path(out_path).resolve())
    with tempfile.TemporaryDirectory(prefix="int4-gather-") as tmp, _quiet(Path(tmp)):
        quantize_dynamic(src, dst, per_channel=False, weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"])
    onnx.checker.check_model(dst)
    return Path(out_path)


def _initializers(model) -> dict[str, Any]:
    return {t.name: t for t in model.graph.initializer}


def _reason(node, inits: dict[str, Any], opset: int) -> str | None:
    """Why this node of the int4 graph still holds an fp32 weight path (None: nothing to report)."""
    if node.op_type == "MatMul":
        b = inits.get(node.input[1]) if len(node.input) > 1 else None
        if b is None:
            return "no constant weight: both inputs are activations (e.g. attention scores or weights x values)"
        if len(b.dims) < 2:
            return f"weight has {len(b.dims)} dimension(s); MatMulNBits needs a 2-D [K, N] weight"
        if any(d != 1 for d in b.dims[:-2]):
            return f"batched weight {list(b.dims)}: MatMulNBits quantizes 2-D weights only"
        return "left as MatMul by the quantizer"
    if node.op_type == "Gemm":
        return "Gemm is not quantized: MatMulNBits replaces MatMul nodes only"
    if node.op_type == "Gather" and node.input and node.input[0] in inits and len(inits[node.input[0]].dims) == 2:
        if inits[node.input[0]].data_type in (2, 3):  # UINT8, INT8: the table was quantized to 8 bits
            return (f"embedding table stored INT8, not int4: int4 Gather (GatherBlockQuantized) needs opset "
                    f"{INT4_GATHER_OPSET} and the bundle exports opset {opset}")
        if opset < INT4_GATHER_OPSET:
            return (f"embedding table stays fp32: int4 Gather (GatherBlockQuantized) needs opset "
                    f"{INT4_GATHER_OPSET} and IR 10, the bundle exports opset {opset} (ReduceMean takes axes as an "
                    "attribute before opset 18, so the graph would no longer load)")
        return "embedding table stays fp32 (Gather is not in the quantized op types)"
    return None


def audit(fp32, int4) -> dict[str, Any]:
    """Which weight-carrying nodes became MatMulNBits, and each one that did not, with the reason."""
    opset = max((o.version for o in int4.opset_import if o.domain in ("", "ai.onnx")), default=0)
    inits = _initializers(int4)
    quantized = [n.name for n in int4.graph.node if n.op_type == "MatMulNBits"]
    not_quantized = []
    for node in int4.graph.node:
        reason = _reason(node, inits, opset)
        if reason is not None:
            not_quantized.append({"node": node.name, "op": node.op_type, "reason": reason})
    fp32_bytes = sum(len(t.raw_data) or 0 for t in fp32.graph.initializer)
    left = sum(len(inits[n.input[0]].raw_data) for n in int4.graph.node
               if n.op_type == "Gather" and n.input and n.input[0] in inits and len(inits[n.input[0]].dims) == 2)
    return {"quantized": len(quantized), "quantized_nodes": quantized, "not_quantized": not_quantized,
            "fp32_weight_bytes": fp32_bytes, "embedding_table_bytes": left}


def summary_reasons(info: dict[str, Any]) -> dict[str, int]:
    """Count of not-quantized nodes per (op, reason), for check details."""
    out: dict[str, int] = {}
    for n in info.get("not_quantized", []):
        key = f"{n['op']}: {n['reason']}"
        out[key] = out.get(key, 0) + 1
    return out


def build(kind: str, mdir: Path, samples: dict, cfg, threads: int, log, name: str = "") -> tuple[dict, dict | None]:
    """The int4 step of one bundle model: (manifest entry ``quantization_int4``, parity result or None).

    ``status`` is ``quantized``, ``failed`` (the reason, and a failed int4 parity result), ``not_applicable``
    (not a causal LM) or ``off`` (``int4: false``)."""
    from ml.export import parity

    if not cfg.int4:
        return {"status": "off", "reason": "int4: false in the bundle config"}, None
    if getattr(cfg, "skip_quantization", False):
        return {"status": "off", "reason": "skip_quantization: true (fp32 only)"}, None
    reason = not_applicable(kind)
    if reason:
        return {"status": "not_applicable", "reason": reason}, None
    out = Path(mdir) / FILE
    tables = TABLE_MODES.get(getattr(cfg, "int4_embeddings", "auto"))
    if tables is None:
        raise ValueError(f"int4_embeddings must be one of {sorted(TABLE_MODES)}, got {cfg.int4_embeddings!r}")
    tried = []
    try:
        with tempfile.TemporaryDirectory(prefix=f"int4-{name}-") as tmp:
            fp32_tables = Path(tmp) / "fp32_tables.onnx"
            info = quantize_int4(Path(mdir) / "model.onnx", fp32_tables, block_size=cfg.int4_block_size,
                                 symmetric=cfg.int4_symmetric, accuracy_level=cfg.int4_accuracy_level)
            for table in tables:
                path = fp32_tables if table == "fp32" else int8_tables(fp32_tables, Path(tmp) / "int8_tables.onnx")
                res = parity.check_onnx(path, kind, "int4", samples, cfg.thresholds, threads)
                tried.append((table, path, res))
            # the INT8 table first when it passes (smaller), else whichever is closer to PyTorch
            table, path, res = max(tried, key=lambda t: (t[2]["passed"], t[2]["passed"] and t[0] == "int8",
                                                         t[2]["metrics"].get("argmax_agreement", 0.0),
                                                         -t[2]["metrics"].get("max_abs_diff", float("inf"))))
            import onnx

            fp32 = onnx.load(str(Path(mdir) / "model.onnx"))
            info.update(audit(fp32, onnx.load(str(path))))
            shutil.copyfile(path, out)
    except Exception as exc:  # the quantizer and onnx raise many types: record the reason, fail the gate
        out.unlink(missing_ok=True)
        msg = f"int4 quantization failed: {type(exc).__name__}: {exc}"
        log(f"{name}: {msg}")
        return {"status": "failed", "reason": msg}, {
            "kind": kind, "precision": "int4", "samples": int(len(samples["reference"])), "metrics": {},
            "criteria": [], "problems": [msg], "passed": False}
    summary = {t: {"passed": r["passed"], **{k: r["metrics"].get(k) for k in ("argmax_agreement", "max_abs_diff")}}
               for t, _, r in tried}
    log(f"{name}: int4 (block {cfg.int4_block_size}, {'symmetric' if cfg.int4_symmetric else 'asymmetric'}, "
        f"{table} embedding table): {info['quantized']} MatMulNBits; candidates {summary}")
    return {"status": "quantized", **info, "embeddings": table, "embeddings_mode": cfg.int4_embeddings
            if hasattr(cfg, "int4_embeddings") else "auto", "candidates": summary}, res
