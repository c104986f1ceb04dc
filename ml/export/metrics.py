"""The final metrics of a checkpoint version, as the bundle manifest and the model cards show them.

A checkpoint's ``summary.json`` (ml/train/run.py) holds ``val``: the validation metrics of the
published weights, ``best`` (metric, mode, value, step), ``exported_weights`` and, when the task
evaluates a held-out test split, ``test``. A LoRA adapter also reports its base LM's metrics
(``base``), read from the lm_checkpoint version its manifest records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ml.store import ArtifactStore


def read_summary(version_dir: Path) -> dict[str, Any]:
    path = Path(version_dir) / "summary.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """val / test / best / exported weights / steps of one summary.json (test: None when no test split)."""
    return {"val": summary.get("val") or {}, "test": summary.get("test") or None, "best": summary.get("best"),
            "exported_weights": summary.get("exported_weights"), "steps": summary.get("steps")}


def checkpoint_metrics(store: ArtifactStore, asset: str, version: str) -> dict[str, Any]:
    """{"asset", "data_version", "val", "test", "best", "exported_weights", "steps"[, "base"]}."""
    ver = store.get(asset, version)
    out = {"asset": asset, "data_version": version, **summary_metrics(read_summary(ver.path))}
    base = ver.manifest.get("upstream", {}).get("lm_checkpoint") if asset != "lm_checkpoint" else None
    if base and asset in ("lora_adapter",) and store.has_version("lm_checkpoint", base):
        out["base"] = {"asset": "lm_checkpoint", "data_version": base,
                       **summary_metrics(read_summary(store.get("lm_checkpoint", base).path))}
    return out
