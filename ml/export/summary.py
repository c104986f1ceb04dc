"""The bundle at a glance: one row per model (sizes, parity, variant) and one per latency shape, as
the asset's metadata tables and reports show them."""

from __future__ import annotations

import json
from typing import Any

from ml.export.bundle import ENGINES
from ml.export.int4 import ENGINE as INT4_ENGINE


def model_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, m in manifest["models"].items():
        int8 = m["parity"].get("int8", {})
        rows.append({
            "model": name, "kind": m["kind"], "parameters": m["parameters"],
            "fp32_MB": round(m["bytes"]["fp32"] / 1e6, 3),
            "int8_MB": round(m["bytes"]["int8"] / 1e6, 3) if "int8" in m["bytes"] else None,
            "int8_ratio": m["bytes"].get("int8_ratio"),
            "fp32_max_abs_diff": m["parity"]["fp32"]["max_abs_diff"],
            "int8_cosine_mean": int8.get("cosine_mean"), "int8_argmax_agreement": int8.get("argmax_agreement"),
            "int8_variant": (m["quantization"] or {}).get("chosen"),
            "int4_MB": round(m["bytes"]["int4"] / 1e6, 3) if "int4" in m["bytes"] else None,
            "int4_argmax_agreement": m["parity"].get("int4", {}).get("argmax_agreement"),
            "int4_max_logit_diff": m["parity"].get("int4", {}).get("max_abs_diff"),
            "int4": (m.get("quantization_int4") or {}).get("status"),
            "val": json.dumps((m.get("metrics") or {}).get("val") or {}, sort_keys=True)[:120],
            "parity": "pass" if all(p["passed"] for p in m["parity"].values()) else "FAIL",
        })
    return rows


def latency_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """From the run record (``build.read_latency``): model, shape, ms per engine, INT8 speed-up."""
    rows = []
    for name, m in (record.get("models") or {}).items():
        for shape, row in (m.get("latency_ms") or {}).items():
            rows.append({"model": name, "shape": shape, **{e: row.get(e) for e in (*ENGINES, INT4_ENGINE)},
                         "int8_speedup_vs_torch": round(row["torch_fp32"] / row["ort_int8"], 2)
                         if row.get("ort_int8") else None})
    return rows
