"""Validate one stored version with its asset's suite, and record the results in the catalog.

A result belongs to (data version, check version): a recorded result with the same check version is what
validating again would give, so ``recorded_results`` returns it instead. Result fields: ml/FORMATS.md,
"Checks"; usage: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from ml.catalog import Catalog, check_result_rows
from ml.fsutil import digest_json, source_digest
from ml.quality.engine import run_expectations
from ml.quality.suite import Prepared, Suite, Thresholds
from ml.quality.suites import SUITE_MODULES, SUITES
from ml.store import ArtifactStore


# every module of ml/quality/ (the GX integration, this file) and every stage's suite module: a change to
# any is a new check version
CODE_VERSION = source_digest(*sorted(Path(__file__).parent.glob("*.py")), *(m.__file__ for m in SUITE_MODULES))


def _gx_version() -> str:
    try:
        return metadata.version("great_expectations")
    except metadata.PackageNotFoundError:  # pragma: no cover - a dependency of the project
        return "unknown"


def check_version(asset: str, thresholds: Thresholds = Thresholds()) -> str:
    """The version of ``asset``'s suite as it would run now: its code, GX's version and the thresholds."""
    return digest_json({"asset": asset, "code": CODE_VERSION, "great_expectations": _gx_version(),
                        "thresholds": asdict(thresholds)})


def suite_for(asset: str) -> Suite:
    try:
        return SUITES[asset]
    except KeyError:
        raise KeyError(f"no quality suite for asset {asset!r}; suites exist for {sorted(SUITES)}") from None


def validate_version(
    store: ArtifactStore,
    asset: str,
    data_version: str,
    thresholds: Thresholds = Thresholds(),
    checks: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the suite of ``asset`` on ``asset@data_version`` (only ``checks`` if given)."""
    suite = suite_for(asset)
    by_name = {c.name: c for c in suite.checks}
    wanted = set(by_name) if checks is None else set(checks)
    unknown = wanted - set(by_name)
    if unknown:
        raise KeyError(f"{asset} has no checks {sorted(unknown)}; it has {sorted(by_name)}")
    version = store.open(asset, data_version)  # verified against its manifest (CorruptVersionError)
    try:
        prepared = suite.prepare(store, version, thresholds)
    except Exception as exc:  # unreadable version (corrupt Parquet, wrong types, ...): every check fails
        why = f"could not read {asset}@{data_version}: {type(exc).__name__}: {exc}"
        results = [unrun_result(c.name, c.severity, why) for c in suite.checks if c.name in wanted]
        prepared = Prepared(frames={}, expectations=[])
    else:
        made = [e.check for e in prepared.expectations]
        if sorted(made) != sorted(by_name):  # a suite must report every check it declares, exactly once
            raise AssertionError(f"{asset} suite built expectations {sorted(made)} for checks {sorted(by_name)}")
        exps = [replace(e, severity=by_name[e.check].severity) for e in prepared.expectations if e.check in wanted]
        results = run_expectations(prepared.frames, exps, sample_rows=thresholds.sample_rows,
                                   errors={k: v for k, v in prepared.errors.items() if k in wanted})
    for r in results:
        r["description"] = by_name[r["check_name"]].description
        r["data_version"] = data_version
        r["inputs"] = dict(prepared.inputs)
    return results


def recorded_results(catalog: Catalog, asset: str, data_version: str, version: str,
                     checks: Iterable[str]) -> list[dict[str, Any]] | None:
    """The recorded results of ``checks`` on asset@data_version made by check version ``version``
    (the latest of each), in the shape ``validate_version`` returns, plus ``reused_from_run``
    (the run that validated) — or None unless every one of ``checks`` has such a result."""
    wanted = list(checks)
    df = catalog.query(
        """
        SELECT check_name, passed, severity, details, run_id FROM (
          SELECT *, row_number() OVER (PARTITION BY check_name ORDER BY created_at DESC) AS rn
          FROM check_results
          WHERE asset = ? AND data_version = ? AND json_extract_string(details, '$.check_version') = ?)
        WHERE rn = 1
        """,
        [asset, data_version, version],
    )
    by_name = {row["check_name"]: row for row in df.iter_rows(named=True)}
    if not wanted or any(name not in by_name for name in wanted):
        return None
    out = []
    for name in wanted:
        row = by_name[name]
        result = json.loads(row["details"])
        result.update(check_name=name, passed=bool(row["passed"]), severity=row["severity"],
                      reused_from_run=row["run_id"])
        out.append(result)
    return out


def unrun_result(check_name: str, severity: str, error: str) -> dict[str, Any]:
    """A failed result for a check whose data could not even be read."""
    return {"check_name": check_name, "severity": severity, "passed": False, "expectation": None,
            "element_count": None, "unexpected_count": None, "unexpected_percent": None,
            "observed_value": None, "sample": [], "error": error}


def record_results(catalog: Catalog, asset: str, data_version: str, results: list[dict[str, Any]],
                   run_id: str) -> str | None:
    """Append one batch of check_results rows (atomic: all of them or none)."""
    rows = check_result_rows(asset, data_version, run_id, [
        (r["check_name"], r["passed"], r["severity"],
         json.dumps({k: v for k, v in r.items() if k not in ("check_name", "passed", "severity")},
                    sort_keys=True, default=str))
        for r in results])
    return catalog.append({"check_results": rows})
