"""Promotion: mark one component of an onnx_bundle version as the one to deploy (a ``promotions`` row).

A bundle is refused unless it verifies and its blocking checks, its parity and its held-out evaluation
passed; the latest row per component is the promoted one. The refusals: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import getpass
import json
import os
from typing import Any

import polars as pl

from ml.catalog import Catalog, corrupt_rows, now_utc
from ml.export.bundle import BUNDLE_DIR, MANIFEST, PARITY, TARBALL
from ml.export.verify import verify_bundle
from ml.quality.gate import failed_blocking_checks, latest_check_results
from ml.store import ArtifactStore, CorruptVersionError

ASSET = "onnx_bundle"


class PromotionRefused(RuntimeError):
    pass


def resolve_bundle(catalog: Catalog, store: ArtifactStore, version: str) -> str:
    """The full data version of an onnx_bundle version (a unique prefix works)."""
    found = catalog.query(
        "SELECT DISTINCT data_version FROM asset_versions WHERE asset = ? AND data_version LIKE ? || '%'",
        [ASSET, version],
    )["data_version"].to_list()
    if not found:
        found = [v.data_version for v in store.versions(ASSET) if v.data_version.startswith(version)]
    if not found:
        raise PromotionRefused(f"{ASSET}@{version} is not in the catalog or the store")
    if len(found) > 1:
        raise PromotionRefused(f"version prefix {version!r} is ambiguous: {sorted(found)}")
    return found[0]


def verify_stored(catalog: Catalog, store: ArtifactStore, data_version: str):
    """Before anything is read: every file of the stored version against its manifest (a corrupt
    bundle is recorded in corrupt_versions and moved aside). Returns the version directory."""
    try:
        return store.open(ASSET, data_version).path
    except CorruptVersionError as err:
        moved = store.quarantine(ASSET, data_version)
        catalog.append({"corrupt_versions": corrupt_rows(err, "lineage promote", moved_to=moved)})
        raise PromotionRefused(f"{err}; recorded in corrupt_versions and moved to {moved}") from None


def verify_package(version_dir, data_version: str, threads: int = 0) -> None:
    """The package as ``lineage verify`` checks it: safe extraction, sha256 of every member, parity
    samples re-run in ONNX Runtime (last, after the cheaper refusals)."""
    report = verify_bundle(version_dir / TARBALL, threads=threads)
    if not report.ok:
        failed = "; ".join(msg for ok, msg in report.checks if not ok)
        raise PromotionRefused(f"{ASSET}@{data_version}: {TARBALL} fails verification: {failed}")


def promote(catalog: Catalog, store: ArtifactStore, component: str, version: str, *,
            by: str | None = None, note: str = "", threads: int = 0) -> dict[str, Any]:
    """Record ``component`` of onnx_bundle@version as promoted; PromotionRefused says why not.
    The stored files are verified first (``verify_stored``), the package last (``verify_package``)."""
    data_version = resolve_bundle(catalog, store, version)
    if not store.has_version(ASSET, data_version):
        raise PromotionRefused(f"{ASSET}@{data_version} is in the catalog but missing from the store at {store.root}")
    version_dir = verify_stored(catalog, store, data_version)
    root = version_dir / BUNDLE_DIR
    manifest = json.loads((root / MANIFEST).read_text("utf-8"))
    if component not in manifest["models"]:
        raise PromotionRefused(f"{ASSET}@{data_version} has no component {component!r}; it has {sorted(manifest['models'])}")

    if latest_check_results(catalog, ASSET, data_version).height == 0:
        raise PromotionRefused(f"{ASSET}@{data_version} has no recorded check results; materialize it so its "
                               "parity checks run before promoting it")
    failed = failed_blocking_checks(catalog, ASSET, data_version)
    if failed:
        names = ", ".join(f"{f['check_name']} ({_short(f['details'])})" for f in failed)
        raise PromotionRefused(f"{ASSET}@{data_version}: blocking checks failed: {names}")
    refuse_regressed(catalog, data_version, manifest)
    report = json.loads((root / PARITY).read_text("utf-8"))["models"][component]
    bad = [prec for prec, r in report.items() if not r["passed"]]
    if bad:
        raise PromotionRefused(f"{ASSET}@{data_version}: {component} parity failed for {bad}")

    verify_package(version_dir, data_version, threads)

    src = manifest["models"][component].get("source", {})
    row = {
        "component": component,
        "bundle_version": data_version,
        "model_version": f"{src.get('asset', '?')}@{src.get('data_version', '?')}",
        "promoted_by": by or os.environ.get("LINEAGE_USER") or _user(),
        "promoted_at": now_utc(),
        "note": note,
    }
    catalog.append({"promotions": [row]})
    return row


def refuse_regressed(catalog: Catalog, data_version: str, manifest: dict[str, Any]) -> None:
    """A bundle whose manifest names a model_evaluation version is refused when that evaluation's blocking
    checks (no_regression against the promoted models) failed, as last recorded."""
    ev = manifest.get("evaluation") or {}
    if not ev.get("data_version"):
        return
    failed = failed_blocking_checks(catalog, ev.get("asset", "model_evaluation"), ev["data_version"])
    if failed:
        names = ", ".join(f"{f['check_name']} ({_short(f['details'])})" for f in failed)
        raise PromotionRefused(f"{ASSET}@{data_version}: its evaluation {ev.get('asset', 'model_evaluation')}@"
                               f"{ev['data_version']} regressed: {names}")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _short(details: Any, n: int = 160) -> str:
    s = str(details or "")
    return s if len(s) <= n else s[: n - 1] + "…"


def promotions(catalog: Catalog, component: str | None = None, history: bool = False) -> pl.DataFrame:
    """What is promoted now (latest row per component), or every promotion newest first."""
    where = "WHERE component = ?" if component else ""
    params = [component] if component else None
    if history:
        return catalog.query(f"SELECT * FROM promotions {where} ORDER BY promoted_at DESC", params)
    return catalog.query(
        f"""SELECT component, bundle_version, model_version, promoted_by, promoted_at, note FROM (
              SELECT *, row_number() OVER (PARTITION BY component ORDER BY promoted_at DESC) AS rn
              FROM promotions {where}) WHERE rn = 1 ORDER BY component""",
        params,
    )
