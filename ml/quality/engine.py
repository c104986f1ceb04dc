"""The one Great Expectations integration: run GX 1.x expectations over polars frames.

``run_expectations`` hands each frame to GX as a pandas frame (only the columns the expectations
read) and returns one plain result dict per expectation (fields: ml/FORMATS.md, check_results).
GX runs in one ephemeral, offline context per process, created on first use: importing this
module does not import GX.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Mapping, Sequence

import polars as pl

SEVERITIES = ("ERROR", "WARN")
SAMPLE_CHARS = 160  # strings in a failing-row sample are cut to this many characters
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_COLUMN_LIST_KWARGS = ("column_list",)


@dataclass(frozen=True)
class Expectation:
    """One GX expectation, reported as the check ``check`` of the suite.

    ``frame`` names the suite frame it validates; ``type``/``kwargs`` are exactly what GX gets
    (``ExpectationConfiguration(type=..., kwargs=...)``); ``sample_columns`` are the columns of the
    polars frame shown for failing rows (default: the columns the expectation reads).
    """

    check: str
    frame: str
    type: str
    kwargs: Mapping[str, Any]
    severity: str = "ERROR"
    sample_columns: tuple[str, ...] = ()
    notes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.check}: severity must be one of {SEVERITIES}, got {self.severity!r}")
        if not self.type.startswith("expect_"):
            raise ValueError(f"{self.check}: {self.type!r} is not a GX expectation type")

    def columns(self) -> list[str]:
        cols = [self.kwargs[k] for k in _COLUMN_KWARGS if k in self.kwargs]
        for k in _COLUMN_LIST_KWARGS:
            cols.extend(self.kwargs.get(k) or ())
        return cols

    def config(self) -> dict[str, Any]:
        return {"type": self.type, "kwargs": _jsonable(dict(self.kwargs))}


# ---- the GX context (one per process) --------------------------------------------------------
_lock = threading.RLock()
_context = None
_batch_definition = None


def _quiet_gx() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.WARNING)


def gx_context():
    """The process's ephemeral GX context (in memory, no progress bars), made on first use."""
    global _context
    with _lock:
        if _context is None:
            _quiet_gx()
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            _context = context
        return _context


def _whole_frame_batch_definition():
    """The batch definition every frame is validated through (a pandas dataframe asset)."""
    global _batch_definition
    with _lock:
        if _batch_definition is None:
            asset = gx_context().data_sources.add_pandas("lineage_forge").add_dataframe_asset("frame")
            _batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        return _batch_definition


# ---- running ---------------------------------------------------------------------------------
def run_expectations(
    frames: Mapping[str, pl.DataFrame],
    expectations: Sequence[Expectation],
    *,
    sample_rows: int = 5,
    errors: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Validate ``expectations`` on ``frames``; one result dict per expectation, in input order.

    ``errors`` maps check names to a reason the suite could not even build their frame (e.g. an
    upstream version missing from the store): those are reported failed with that error, unrun.
    """
    names = [e.check for e in expectations]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate check names in suite: {sorted(n for n in names if names.count(n) > 1)}")
    errors = dict(errors or {})
    out: dict[str, dict[str, Any]] = {}
    by_frame: dict[str, list[Expectation]] = {}
    for e in expectations:
        if e.check in errors:
            out[e.check] = _result(e, passed=False, error=errors[e.check])
        elif e.frame not in frames:
            out[e.check] = _result(e, passed=False, error=f"suite built no frame {e.frame!r}")
        else:
            by_frame.setdefault(e.frame, []).append(e)

    for frame_name, exps in by_frame.items():
        frame = frames[frame_name]
        out.update(_validate_frame(frame, exps, sample_rows))
    return [out[n] for n in names]


def _validate_frame(frame: pl.DataFrame, exps: list[Expectation], sample_rows: int) -> dict[str, dict]:
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    wanted = [c for c in dict.fromkeys(c for e in exps for c in e.columns()) if c in frame.columns]
    # GX needs at least one column; an empty selection happens only when every column is missing
    pdf = frame.select(wanted or frame.columns[:1] or [pl.lit(None).alias("_")]).to_pandas()
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max(sample_rows, 1)}
    with _lock:
        batch_definition = _whole_frame_batch_definition()  # first: a suite needs an active context
        suite = ExpectationSuite(name="lineage_forge")
        for e in exps:
            cfg = ExpectationConfiguration(type=e.type, kwargs=dict(e.kwargs), meta={"check": e.check})
            suite.add_expectation(cfg.to_domain_obj())
        batch = batch_definition.get_batch(batch_parameters={"dataframe": pdf})
        validation = batch.validate(suite, result_format=result_format)

    by_check = {e.check: e for e in exps}
    out = {}
    for r in validation.results:
        e = by_check[r.expectation_config.meta["check"]]
        res = dict(r.result or {})
        exc = r.exception_info or {}
        error = None
        if exc.get("raised_exception"):
            error = exc.get("exception_message") or "expectation raised"
        else:  # several metrics may each carry their own exception_info
            for v in exc.values():
                if isinstance(v, dict) and v.get("raised_exception"):
                    error = v.get("exception_message") or "expectation raised"
                    break
        idx = res.get("partial_unexpected_index_list") or []
        out[e.check] = _result(
            e, passed=bool(r.success) and error is None, error=error,
            element_count=res.get("element_count"),
            unexpected_count=res.get("unexpected_count"),
            unexpected_percent=res.get("unexpected_percent"),
            observed_value=res.get("observed_value"),
            sample=_sample(frame, e, idx[:sample_rows]),
        )
    missing = set(by_check) - set(out)
    for name in missing:  # GX dropped an expectation (should not happen): never lose a check silently
        out[name] = _result(by_check[name], passed=False, error="GX returned no result for this expectation")
    return out


def _sample(frame: pl.DataFrame, e: Expectation, index: list) -> list[dict[str, Any]]:
    if not index:
        return []
    cols = [c for c in (e.sample_columns or e.columns()) if c in frame.columns]
    rows = [int(i) for i in index if isinstance(i, (int,)) or str(i).isdigit()]
    if not cols or not rows:
        return []
    return [_jsonable(r) for r in frame.select(cols)[rows].iter_rows(named=True)]


def _result(e: Expectation, *, passed: bool, error: str | None = None, element_count=None,
            unexpected_count=None, unexpected_percent=None, observed_value=None,
            sample: list | None = None) -> dict[str, Any]:
    return {
        "check_name": e.check,
        "severity": e.severity,
        "passed": passed,
        "expectation": e.config(),
        "element_count": None if element_count is None else int(element_count),
        "unexpected_count": None if unexpected_count is None else int(unexpected_count),
        "unexpected_percent": None if unexpected_percent is None else float(unexpected_percent),
        "observed_value": _jsonable(observed_value),
        "sample": sample or [],
        "error": error,
        **({"notes": _jsonable(dict(e.notes))} if e.notes else {}),
    }


def _jsonable(v: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/inf as strings, long strings cut."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (TypeError, ValueError):
            return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, str) and len(v) > SAMPLE_CHARS:
        return v[: SAMPLE_CHARS - 1] + "…"
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
