"""The blocking checks of a checkpoint, computed from its metrics.jsonl and summary.json.

- ``training_loss_fell``: the mean train loss of the last tenth of the logged points is lower than
  that of the first tenth by more than ``min_loss_drop`` (a fraction), and finite.
- ``val_metrics_ok``: every final validation metric is finite and each configured floor
  (higher-is-better metrics) and ceiling (lower-is-better) holds.
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
CHECK_NAMES = (LOSS_FELL, VAL_OK)


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


def evaluate(version_dir: Path, cfg: CheckSettings) -> list[Outcome]:
    summary = json.loads((Path(version_dir) / "summary.json").read_text("utf-8"))
    return [loss_fell(read_metrics(version_dir), cfg.min_loss_drop), val_ok(summary, cfg.val_floor, cfg.val_ceiling)]
