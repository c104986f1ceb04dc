"""Latency of every engine of one bundle model: a run fact (ml/run_record.py), never bundle content.

The torch baseline is eager mode with transformers' default attention (SDPA); ORT sessions run the
bundle's fp32, INT8 and int4 files. Median of ``runs`` after warm-up, ``threads`` for all engines.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from ml.export import parity
from ml.export import to_onnx
from ml.export.bundle import FP32, INT8


def engine_notes(has_int8: bool, int4_file: str | None) -> dict[str, str]:
    return {"torch_fp32": "PyTorch eager mode, default attention, fp32", "ort_fp32": "ONNX Runtime CPU, model.onnx",
            **({"ort_int8": "ONNX Runtime CPU, model.int8.onnx"} if has_int8 else {}),
            **({"ort_int4": f"ONNX Runtime CPU, {int4_file}"} if int4_file else {})}


def measure(src, mdir: Path, samples: dict, info: dict[str, Any], cfg, threads: int, *, has_int8: bool,
            int4_file: str | None) -> dict[str, Any]:
    """{"latency_ms": {shape: {engine: ms}}, "latency_setup": {...}} for the model files in ``mdir``."""
    from ml.export.int4 import ENGINE as INT4_ENGINE

    graph = src.kind in to_onnx.GRAPH_KINDS
    seq = min(cfg.latency_seq, info["max_positions"]) if info["max_positions"] else cfg.latency_seq
    gc.collect()
    model = to_onnx.load_model(src, attn_implementation=None)
    module = to_onnx.wrap(src, model)
    sessions = {"ort_fp32": parity.ort_session(mdir / FP32, threads)}
    if has_int8:
        sessions["ort_int8"] = parity.ort_session(mdir / INT8, threads)
    if int4_file:
        sessions[INT4_ENGINE] = parity.ort_session(mdir / int4_file, threads)
    shapes = [(f"b{len(samples['query'])}graph", None)] if graph else \
        [(f"b{batch}s{seq}", parity.latency_feeds(info["vocab_size"], batch, seq)) for batch in cfg.latency_batches]
    latency: dict[str, dict[str, float]] = {}
    for shape, feeds in shapes:
        if graph:  # the stored sample graph: every sample query in one batch
            from ml.gnn import export as gnn_export

            feeds = {str(k): samples[str(k)] for k in samples["feed_names"]}
            with to_onnx.torch_threads(threads):
                row = {"torch_fp32": parity.median_ms(lambda: gnn_export.torch_scores(module, feeds), cfg.latency_runs)}
        else:
            row = {"torch_fp32": to_onnx.torch_latency_ms(module, feeds, cfg.latency_runs, threads)}
        for engine, sess in sessions.items():
            row[engine] = parity.ort_latency_ms(sess, feeds, cfg.latency_runs)
        latency[shape] = {k: round(v, 4) for k, v in row.items()}
    del module, model, sessions
    gc.collect()
    return {"latency_ms": latency,
            "latency_setup": {"runs": cfg.latency_runs, "statistic": "median", "threads": threads,
                              "inputs": "random ids, full attention mask",
                              "engines": engine_notes(has_int8, int4_file)}}


def latency_facts(record: dict[str, Any] | None) -> dict[str, float]:
    """Flat numbers of a bundle's latency record (latency_ms.<model>.<engine>.<shape>, speedup...)."""
    out: dict[str, float] = {}
    for name, m in ((record or {}).get("models") or {}).items():
        for shape, row in (m.get("latency_ms") or {}).items():
            for engine, ms in row.items():
                out[f"latency_ms.{name}.{engine}.{shape}"] = ms
            for engine in ("ort_int8", "ort_int4"):
                if row.get(engine, 0) > 0:
                    out[f"speedup.{name}.{engine}_vs_torch_fp32.{shape}"] = round(row["torch_fp32"] / row[engine], 4)
        for k, v in (m.get("seconds") or {}).items():
            out[f"seconds.{name}.{k}"] = v
    return out
