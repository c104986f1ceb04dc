"""Sweeps over training settings (no Dagster): the points of a grid or a random search, and their ranking.

Every point's settings are validated by the asset's own settings model before anything trains. The
sweep spec: DESIGN.md, "Module notes"; the asset: assets/sweeps.py.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ml.train.config import LOWER_IS_BETTER, SETTINGS


class RandomSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(4, ge=1, description="points drawn")
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict, description="path -> [choices] or {low, high, log}")


class SweepSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, description="the sweep's name in sweep_results (and train.from_sweep)")
    asset: str = Field("lm_checkpoint", description="the training asset swept")
    base: dict[str, Any] = Field(default_factory=dict, description="the asset's settings every point starts from")
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    random: Optional[RandomSpace] = None
    metric: str = Field("loss", description="validation metric that ranks the points")
    mode: Optional[Literal["min", "max"]] = Field(None, description="default: min for loss/perplexity, else max")

    @model_validator(mode="after")
    def _space(self) -> "SweepSettings":
        if self.asset not in SETTINGS:
            raise ValueError(f"asset {self.asset!r} is not a training asset; known: {sorted(SETTINGS)}")
        if bool(self.grid) == bool(self.random):
            raise ValueError("a sweep needs exactly one of grid or random")
        if any(not v for v in self.grid.values()):
            raise ValueError("every grid path needs at least one value")
        return self

    @property
    def direction(self) -> str:
        return self.mode or ("min" if self.metric in LOWER_IS_BETTER else "max")


def set_path(settings: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(settings)
    node = out
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"sweep path {path!r}: {p!r} is not a section")
    node[leaf] = value
    return out


def _draw(rng: random.Random, space: Any) -> Any:
    if isinstance(space, list):
        return rng.choice(space)
    if isinstance(space, dict) and {"low", "high"} <= set(space):
        lo, hi = float(space["low"]), float(space["high"])
        if space.get("log"):
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return rng.uniform(lo, hi)
    raise ValueError(f"random space {space!r}: expected a list of choices or {{low, high[, log]}}")


def points(sweep: SweepSettings) -> list[dict[str, Any]]:
    """[{point: "p0", params: {path: value}, settings: {...}}] in a stable order, each settings dict
    validated by the asset's settings model (a bad point fails here, naming the point)."""
    if sweep.grid:
        keys = sorted(sweep.grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(sweep.grid[k] for k in keys))]
    else:
        rng = random.Random(sweep.random.seed)
        keys = sorted(sweep.random.params)
        combos = [{k: _draw(rng, sweep.random.params[k]) for k in keys} for _ in range(sweep.random.n)]
    out = []
    for i, params in enumerate(combos):
        settings = sweep.base
        for path, value in params.items():
            settings = set_path(settings, path, value)
        try:
            SETTINGS[sweep.asset].model_validate(settings)
        except Exception as exc:
            raise ValueError(f"sweep {sweep.name} point p{i} {params}: {exc}") from exc
        out.append({"point": f"p{i}", "params": params, "settings": settings})
    return out


def rank(results: list[dict[str, Any]], metric: str, direction: str) -> list[dict[str, Any]]:
    """``results`` (each with ``val``: the point's final validation metrics) sorted best first, with
    ``value`` and ``rank`` (1 = best); a point without a finite value ranks last."""
    def key(r: dict[str, Any]) -> tuple[int, float, str]:
        v = (r.get("val") or {}).get(metric)
        ok = v is not None and math.isfinite(float(v))
        return (0 if ok else 1, (float(v) if direction == "min" else -float(v)) if ok else 0.0, r["point"])

    ranked = sorted(results, key=key)
    return [{**r, "value": (r.get("val") or {}).get(metric), "rank": i + 1, "best": i == 0}
            for i, r in enumerate(ranked)]


def params_json(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)
