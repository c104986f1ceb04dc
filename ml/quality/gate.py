"""The blocking gate: which of a version's blocking checks failed, by their latest results.

``check_results`` is append-only, so a check run twice on the same version has two rows; the
latest row of each ``check_name`` is the one that counts. ``severity = 'ERROR'`` marks blocking
checks (``'WARN'`` marks warnings, which never block).
"""

from __future__ import annotations

from ml.catalog import Catalog


def latest_check_results(catalog: Catalog, asset: str, data_version: str):
    """The latest row of every check recorded for asset@data_version (polars frame)."""
    return catalog.query(
        """
        SELECT check_name, passed, severity, details, run_id, created_at FROM (
          SELECT *, row_number() OVER (PARTITION BY check_name ORDER BY created_at DESC) AS rn
          FROM check_results WHERE asset = ? AND data_version = ?)
        WHERE rn = 1 ORDER BY check_name
        """,
        [asset, data_version],
    )


def failed_blocking_checks(catalog: Catalog, asset: str, data_version: str) -> list[dict]:
    """Blocking checks whose latest result on asset@data_version did not pass (empty: all clear)."""
    df = latest_check_results(catalog, asset, data_version)
    bad = df.filter((df["severity"] == "ERROR") & ~df["passed"].fill_null(False))
    return bad.select("check_name", "details", "run_id").to_dicts()


def unchecked_blocking_checks(catalog: Catalog, asset: str, data_version: str) -> list[str]:
    """Blocking checks of asset's suite (ml/quality/suites.py: SUITES) with no result at all on that version.

    ``failed_blocking_checks`` only sees checks that ran; a caller that must not accept a version
    nobody checked (e.g. one materialized by a run that excluded its checks) asks this too.
    Assets without a suite have no blocking checks here.
    """
    from ml.quality.suites import SUITES

    suite = SUITES.get(asset)
    if suite is None:
        return []
    seen = set(latest_check_results(catalog, asset, data_version)["check_name"].to_list())
    return [c.name for c in suite.checks if c.blocking and c.name not in seen]
