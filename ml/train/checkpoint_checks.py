"""The blocking checks of a checkpoint (``training_loss_fell``, ``val_metrics_ok``, ``experts_not_collapsed``), from its files.

Computed from the version's ``metrics.jsonl`` and ``summary.json``. Each check's rule: DESIGN.md,
"Module notes".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.train.config import CheckSettings

LOSS_FELL = "training_loss_fell"
VAL_OK = "val_metrics_ok"
EXPERTS_OK = "experts_not_collapsed"
CHECK_NAMES = (LOSS_FELL, VAL_OK)
LM_CHECK_NAMES = (LOSS_FELL, VAL_OK, EXPERTS_OK)


@dataclass(frozen=True)
class Outcome:
    name: str
    passed: bool
    details: str
    values: dict[str, Any]


def read_metrics(version_dir: Path) -> list[dict[str, Any]]:
    with open(Path(version_dir) / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_fell(metrics: list[dict[str, Any]], min_drop: float) -> Outcome:
    losses = [r["value"] for r in sorted(metrics, key=lambda r: r["step"])
              if r["split"] == "train" and r["metric"] == "loss"]
    if len(losses) < 2:
        return Outcome(LOSS_FELL, False, f"only {len(losses)} train loss point(s) logged; need 2", {})
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    drop = (first - last) / first if first and math.isfinite(first) and math.isfinite(last) else float("nan")
    ok = math.isfinite(drop) and last < first and drop > min_drop
    return Outcome(LOSS_FELL, ok, f"train loss {first:.4f} -> {last:.4f} (drop {drop:.1%}, need > {min_drop:.1%})",
                   {"first": first, "last": last, "drop": drop})


def val_ok(summary: dict[str, Any], floors: dict[str, float], ceilings: dict[str, float]) -> Outcome:
    val = summary.get("val") or {}
    problems = []
    if not val:
        problems.append("no validation metrics")
    for k, v in val.items():
        if v is None or not math.isfinite(v):
            problems.append(f"{k} is {v}")
    for k, lo in floors.items():
        if k not in val:
            problems.append(f"floor on {k} but the model reports {sorted(val)}")
        elif not val[k] >= lo:
            problems.append(f"{k} {val[k]:.4f} < floor {lo}")
    for k, hi in ceilings.items():
        if k not in val:
            problems.append(f"ceiling on {k} but the model reports {sorted(val)}")
        elif not val[k] <= hi:
            problems.append(f"{k} {val[k]:.4f} > ceiling {hi}")
    shown = ", ".join(f"{k}={v:.4g}" for k, v in val.items() if v is not None)
    return Outcome(VAL_OK, not problems, ("; ".join(problems) + " | " if problems else "") + shown, dict(val))


def experts_ok(summary: dict[str, Any], is_moe: bool, min_used: float, used_share: float) -> Outcome:
    """Expert collapse check from the final ``expert_share.l<L>.e<E>`` validation metrics."""
    if not is_moe:
        return Outcome(EXPERTS_OK, True, "dense LM: no experts to check", {})
    val = summary.get("val") or {}
    layers: dict[int, list[float]] = {}
    for k, v in val.items():
        if k.startswith("expert_share.l"):
            layer = int(k.split(".")[1][1:])
            layers.setdefault(layer, []).append(float(v))
    if not layers:
        return Outcome(EXPERTS_OK, False, "MoE LM without expert_share metrics in its final validation", {})
    used = [s >= used_share / len(shares) for shares in layers.values() for s in shares]
    frac = sum(used) / len(used)
    low = min(min(shares) * len(shares) for shares in layers.values())
    ok = frac >= min_used
    return Outcome(EXPERTS_OK, ok, f"{sum(used)}/{len(used)} (layer, expert) pairs used ({frac:.0%}, floor "
                   f"{min_used:.0%}; used = at least {used_share:.0%} of the fair share); min load {low:.2f} x fair",
                   {"experts_used": frac, "min_expert_load": low, "floor": min_used})


def _is_moe(version_dir: Path) -> bool:
    conf = Path(version_dir) / "model" / "config.json"
    if not conf.is_file():
        return False
    c = json.loads(conf.read_text("utf-8"))
    return bool(c.get("num_local_experts") or c.get("num_experts"))


def evaluate(version_dir: Path, cfg: CheckSettings) -> list[Outcome]:
    summary = json.loads((Path(version_dir) / "summary.json").read_text("utf-8"))
    out = [loss_fell(read_metrics(version_dir), cfg.min_loss_drop), val_ok(summary, cfg.val_floor, cfg.val_ceiling)]
    if summary.get("task") == "lm":
        out.append(experts_ok(summary, _is_moe(version_dir), getattr(cfg, "min_experts_used", 0.5),
                              getattr(cfg, "expert_used_share", 0.1)))
    return out
