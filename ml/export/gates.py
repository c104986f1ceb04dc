"""The bundle's gates: which blocking checks onnx_bundle has, what each one decided, and the refusal
of checkpoints whose own blocking checks failed. Read from a stored bundle's parity.json and manifest.

One check per model (``<name>_parity``: fp32 and INT8 against PyTorch) and, for the causal LMs, one
for the int4 model (``<name>_int4_parity``); a model that cannot be int4-quantized fails that check
with the reason, and int4 turned off in the config passes it with nothing to gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ml.export import int4
from ml.export.bundle import read_manifest, read_parity
from ml.export.sources import COMPONENTS
from ml.quality.gate import failed_blocking_checks

CHECKS = {name: f"{name}_parity" for name in COMPONENTS}  # lm_, embedding_, relation_, gnn_, ner_, dpo_parity
# the int4 gate of each LM (lm_int4_parity, dpo_int4_parity): its own blocking check beside <name>_parity
INT4_CHECKS = {name: f"{name}_int4_parity" for name, (_, kind) in COMPONENTS.items() if kind in int4.KINDS}


@dataclass
class Outcome:
    """One blocking check's result: ``details`` go to the catalog, ``metadata`` to Dagster."""

    check_name: str
    passed: bool
    description: str
    details: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    reported: bool = True  # False: the bundle has no parity report for this model (no catalog row)


def failed_inputs(catalog, store, upstream: Mapping[str, str]) -> list[str]:
    """``asset@version: check`` for every blocking check that failed on the checkpoints about to be
    exported (and the LoRA adapter's base lm_checkpoint)."""
    inputs = dict(upstream)
    base = store.get("lora_adapter", upstream["lora_adapter"]).manifest.get("upstream", {}).get("lm_checkpoint")
    if base:
        inputs["lm_checkpoint"] = base
    return [f"{asset}@{version}: {f['check_name']}" for asset, version in sorted(inputs.items())
            for f in failed_blocking_checks(catalog, asset, version)]


def _details(per_precision: dict) -> dict:
    return {prec: {"passed": r["passed"], "problems": r["problems"],
                   **{c["metric"]: c["value"] for c in r["criteria"]}} for prec, r in per_precision.items()}


def _int4_outcome(name: str, result: dict | None, q4: dict | None) -> Outcome:
    q4 = q4 or {"status": "missing", "reason": "the bundle manifest has no int4 entry (built before int4 existed)"}
    details = {"status": q4.get("status"), "reason": q4.get("reason"),
               "block_size": q4.get("block_size"), "quantized_nodes": q4.get("quantized"),
               "not_quantized": int4.summary_reasons(q4)}
    check = INT4_CHECKS[name]
    if q4.get("status") == "off":
        return Outcome(check, True, f"{name}: int4 off in the bundle config, nothing to gate", details)
    if result is None:
        return Outcome(check, False, f"{name}: no int4 parity result ({q4.get('status')}: {q4.get('reason')})", details)
    details.update(_details({"int4": result})["int4"])
    figures = ", ".join(f"{c['metric']} {c['value']:.4g} ({c['op']} {c['threshold']:g})" for c in result["criteria"]
                        if c["value"] is not None)
    return Outcome(check, result["passed"],
                   "; ".join(result["problems"]) or f"{name}: int4 within thresholds: {figures}", details)


def outcomes(version_dir: Path) -> list[Outcome]:
    """Every blocking check of a stored bundle (int4 gates first, then the per-model parity gates)."""
    report = read_parity(version_dir)["models"]
    models = read_manifest(version_dir)["models"]
    out = []
    for name in INT4_CHECKS:
        if name not in report:
            out.append(Outcome(INT4_CHECKS[name], False, f"no parity report for {name} in the bundle", {},
                               reported=False))
            continue
        out.append(_int4_outcome(name, report[name].get("int4"), models.get(name, {}).get("quantization_int4")))
    for name, check in CHECKS.items():
        per = report.get(name)
        if per is None:
            out.append(Outcome(check, False, f"no parity report for {name} in the bundle", {},
                               reported=False))
            continue
        main = {p: r for p, r in per.items() if p != "int4"}
        details = _details(main)
        q4 = models.get(name, {}).get("quantization_int4")
        if name not in INT4_CHECKS and q4:  # why this model has no int4 file
            details["int4"] = {"status": q4.get("status"), "reason": q4.get("reason")}
        problems = [f"{prec}: {p}" for prec, r in main.items() for p in r["problems"]]
        meta = {f"{prec}.{c['metric']}": float(c["value"]) for prec, r in main.items()
                for c in r["criteria"] if c["value"] is not None}
        out.append(Outcome(check, not problems and all(r["passed"] for r in main.values()),
                           "; ".join(problems) or f"{name}: {' and '.join(main)} parity within thresholds",
                           details, {**meta, "precisions": ", ".join(main)}))
    return out


def catalog_checks(found: list[Outcome]) -> list[tuple[str, bool, str, str]]:
    """(check_name, passed, severity, details JSON) rows for ``ml.catalog.check_result_rows``."""
    return [(o.check_name, o.passed, "ERROR", json.dumps(o.details, sort_keys=True)) for o in found
            if o.reported]
