"""``lineage rebuild ASSET@VERSION``: prove a stored version can be made again from its record.

Only content is compared (the run record and manifest are expected to differ), and a changed code version
is refused unless ``allow_code_change``. Dagster-free: the build itself is handed to jobs/rebuild.py.
Outcomes: DESIGN.md, "Content and run facts" ("Rebuilding a version").
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ml.paths import ASSET_NAME_RE
from ml.run_record import is_run_fact
from ml.store import ArtifactStore, StoredVersion

RUNNER = "jobs.rebuild"  # the Dagster side: seeds a scratch instance and materializes the asset
SAMPLE_ROWS = 3


@dataclass
class RebuildOutcome:
    asset: str
    data_version: str
    status: str  # identical | within_tolerance | differs | code_changed | config_changed | failed
    detail: str
    rebuilt_version: str | None = None
    seconds: float = 0.0
    files: list[dict[str, Any]] = field(default_factory=list)  # one entry per differing content file

    @property
    def identical(self) -> bool:
        return self.status == "identical"

    @property
    def reproduced(self) -> bool:
        return self.status in ("identical", "within_tolerance")

    def line(self) -> str:
        head = f"{self.asset}@{self.data_version}: {self.status.upper().replace('_', ' ')}"
        took = f" ({self.seconds:.1f} s)" if self.seconds else ""
        return f"{head}{took}: {self.detail}"


# ---- planning ---------------------------------------------------------------------------------
def upstream_closure(store: ArtifactStore, asset: str, version: str) -> list[tuple[str, str]]:
    """Every stored version upstream of asset@version (not itself), dependencies first."""
    order: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def visit(a: str, v: str) -> None:
        if (a, v) in seen:
            return
        seen.add((a, v))
        for up, up_v in sorted((store.get(a, v).manifest.get("upstream") or {}).items()):
            if ASSET_NAME_RE.match(up) and store.has_version(up, up_v):
                visit(up, up_v)
        order.append((a, v))

    visit(asset, version)
    return order[:-1]


def landing_inputs(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Upstream entries that are landing files (``landing:<file>`` -> sha256), not stored versions."""
    return {k: v for k, v in (manifest.get("upstream") or {}).items() if not ASSET_NAME_RE.match(k)}


def code_change(manifest: Mapping[str, Any], current_version: str | None,
                current_files: Mapping[str, str]) -> str | None:
    """None when the current code version is the recorded one; else what changed, naming the files."""
    recorded = manifest.get("code_version")
    if current_version == recorded:
        return None
    before = manifest.get("code_files") or {}
    if not before:
        return (f"code version {recorded} was recorded, the current code is {current_version} "
                "(this version predates per-file code records, so the changed files cannot be named)")
    changed = sorted(f for f in set(before) | set(current_files) if before.get(f) != current_files.get(f))
    named = ", ".join(f"{f} ({'added' if f not in before else 'removed' if f not in current_files else 'edited'})"
                      for f in changed) or "the way the files are combined"
    return f"code version {recorded} was recorded, the current code is {current_version}: changed {named}"


# ---- comparison -------------------------------------------------------------------------------
def _content(v: StoredVersion) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in v.manifest.get("files", []) if not is_run_fact(f["path"])}


def _tensors(path: Path) -> dict[str, Any]:
    try:
        from safetensors.numpy import load_file

        return load_file(str(path))
    except (TypeError, ValueError):  # bf16 and other dtypes numpy lacks
        from safetensors.torch import load_file as load_torch

        return {k: t.float().numpy() for k, t in load_torch(str(path)).items()}


def compare_weights(a: Path, b: Path) -> dict[str, Any]:
    import numpy as np

    ta, tb = _tensors(a), _tensors(b)
    out: dict[str, Any] = {"only_in_original": sorted(set(ta) - set(tb)), "only_in_rebuild": sorted(set(tb) - set(ta))}
    diffs, shapes = {}, []
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if x.shape != y.shape:
            shapes.append(f"{name}: {list(x.shape)} vs {list(y.shape)}")
            continue
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            d = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
        else:
            d = float(np.max(np.abs(x.astype(np.int64) - y.astype(np.int64)))) if x.size else 0.0
        if d != 0.0 or np.isnan(d):
            diffs[name] = d
    out["shape_mismatch"] = shapes
    out["differing_tensors"] = dict(sorted(diffs.items(), key=lambda kv: -kv[1])[:10])
    out["n_differing_tensors"] = len(diffs)
    out["max_abs_diff"] = max(diffs.values(), default=0.0)
    return out


def compare_tables(a: Path, b: Path) -> dict[str, Any]:
    import polars as pl

    x, y = pl.read_parquet(a), pl.read_parquet(b)
    out: dict[str, Any] = {"rows": [x.height, y.height], "columns_equal": x.columns == y.columns}
    if not out["columns_equal"]:
        out["columns"] = [x.columns, y.columns]
        return out
    n = min(x.height, y.height)
    xs, ys = x.head(n).with_row_index("_row"), y.head(n).with_row_index("_row")
    diff_cols = [c for c in x.columns if not x[c].head(n).equals(y[c].head(n))]
    out["differing_columns"] = diff_cols
    if diff_cols:
        mask = None
        for c in diff_cols:
            ne = ~pl.Series(x[c].head(n).cast(pl.String).to_list()).eq_missing(
                pl.Series(y[c].head(n).cast(pl.String).to_list())) if x[c].dtype.is_nested() else \
                ~x[c].head(n).eq_missing(y[c].head(n))
            mask = ne if mask is None else mask | ne
        rows = xs.filter(mask)["_row"].head(SAMPLE_ROWS).to_list()
        out["n_differing_rows"] = int(mask.sum())
        out["sample"] = [{"row": r, "original": _short_row(xs.row(r, named=True), diff_cols),
                          "rebuild": _short_row(ys.row(r, named=True), diff_cols)} for r in rows]
        numeric = [c for c in diff_cols if x[c].dtype.is_numeric()]
        if numeric:
            out["max_abs_diff"] = max(float((x[c].head(n).cast(pl.Float64) - y[c].head(n).cast(pl.Float64))
                                            .abs().max() or 0.0) for c in numeric)
    return out


def _short_row(row: Mapping[str, Any], cols: list[str]) -> dict[str, Any]:
    return {c: (str(row[c])[:80] if not isinstance(row[c], (int, float)) else row[c]) for c in cols}


def _json_diff(x: Any, y: Any, path: str = "", out: list[str] | None = None, limit: int = 8) -> list[str]:
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y), key=str):
            if k not in x or k not in y:
                out.append(f"{path}.{k}: only in {'rebuild' if k not in x else 'original'}")
            else:
                _json_diff(x[k], y[k], f"{path}.{k}", out, limit)
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (a, b) in enumerate(zip(x, y)):
            _json_diff(a, b, f"{path}[{i}]", out, limit)
    elif x != y:
        out.append(f"{path or '.'}: {json.dumps(x)[:60]} vs {json.dumps(y)[:60]}")
    return out


def _max_number_diff(x: Any, y: Any) -> float:
    """Largest |difference| between the numbers of two same-shaped JSON values (inf when not numbers only)."""
    if isinstance(x, dict) and isinstance(y, dict):
        return max((_max_number_diff(x[k], y[k]) for k in x), default=0.0) if set(x) == set(y) else math.inf
    if isinstance(x, list) and isinstance(y, list):
        return max((_max_number_diff(a, b) for a, b in zip(x, y)), default=0.0) if len(x) == len(y) else math.inf
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        return abs(float(x) - float(y))
    return 0.0 if x == y else math.inf


def compare_file(rel: str, a: Path, b: Path) -> dict[str, Any]:
    """How two versions of one content file differ (they are known to have different sha256)."""
    out: dict[str, Any] = {"path": rel, "how": "bytes differ", "bytes": [a.stat().st_size, b.stat().st_size]}
    try:
        if rel.endswith(".safetensors"):
            out.update(how="weights", **compare_weights(a, b))
        elif rel.endswith(".parquet"):
            out.update(how="table", **compare_tables(a, b))
        elif rel.endswith(".json"):
            x, y = json.loads(a.read_text("utf-8")), json.loads(b.read_text("utf-8"))
            out.update(how="json", keys=_json_diff(x, y), max_abs_diff=_max_number_diff(x, y))
        elif rel.endswith(".jsonl"):
            x = [json.loads(line) for line in a.read_text("utf-8").splitlines() if line.strip()]
            y = [json.loads(line) for line in b.read_text("utf-8").splitlines() if line.strip()]
            out.update(how="json lines", rows=[len(x), len(y)], keys=_json_diff(x, y), max_abs_diff=_max_number_diff(x, y))
    except Exception as exc:  # a file the reader cannot parse is still reported, by its bytes
        out["unreadable"] = f"{type(exc).__name__}: {exc}"
    return out


def _describe(d: dict[str, Any]) -> str:
    if d.get("missing"):
        return f"{d['path']}: {d['missing']}"
    if d["how"] == "weights":
        extra = "".join(f"; {k.replace('_', ' ')}: {d[k]}" for k in ("only_in_original", "only_in_rebuild",
                                                                       "shape_mismatch") if d.get(k))
        names = ", ".join(f"{k} ({v:.3g})" for k, v in list(d["differing_tensors"].items())[:4])
        return (f"{d['path']}: {d['n_differing_tensors']} tensor(s) differ, max |diff| {d['max_abs_diff']:.3g}"
                f"{': ' + names if names else ''}{extra}")
    if d["how"] == "table":
        if not d.get("columns_equal", True):
            return f"{d['path']}: columns differ {d.get('columns')}"
        return (f"{d['path']}: rows {d['rows'][0]} vs {d['rows'][1]}, {d.get('n_differing_rows', 0)} differing "
                f"row(s) in {d.get('differing_columns')}; sample {json.dumps(d.get('sample', []))[:300]}")
    if d["how"] in ("json", "json lines"):
        return f"{d['path']}: {'; '.join(d['keys'][:4]) or 'formatting only'}"
    return f"{d['path']}: {d['how']} ({d['bytes'][0]} vs {d['bytes'][1]} bytes)"


def tolerance_of(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The documented tolerance of a version that is not bit-reproducible (``reproducibility`` in its
    manifest: {"tolerance": {"atol": float}, "files": [path prefixes], "why": str}), else None."""
    rep = manifest.get("reproducibility") or {}
    return rep if rep.get("tolerance") else None


def compare_versions(original: StoredVersion, rebuilt: StoredVersion) -> tuple[str, str, list[dict[str, Any]]]:
    """(status, detail, per-file differences) of two versions of one asset, content files only."""
    a, b = _content(original), _content(rebuilt)
    diffs: list[dict[str, Any]] = []
    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            diffs.append({"path": rel, "missing": "in the original, not in the rebuild", "how": "missing"})
        elif rel not in a:
            diffs.append({"path": rel, "missing": "in the rebuild, not in the original", "how": "missing"})
        elif a[rel]["sha256"] != b[rel]["sha256"]:
            diffs.append(compare_file(rel, original.file(rel), rebuilt.file(rel)))
    if not diffs:
        return "identical", f"{len(a)} content files byte-identical (data version {rebuilt.data_version})", []
    described = "; ".join(_describe(d) for d in diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
    tol = tolerance_of(original.manifest)
    if tol:
        atol = float(tol["tolerance"].get("atol", 0.0))
        prefixes = tuple(tol.get("files") or [""])
        within = all(d["path"].startswith(prefixes) and not d.get("missing") and not d.get("unreadable")
                     and not d.get("only_in_original") and not d.get("only_in_rebuild") and not d.get("shape_mismatch")
                     and d.get("rows", [0, 0])[0] == d.get("rows", [0, 0])[1]
                     and d.get("max_abs_diff", math.inf) <= atol for d in diffs)
        if within:
            return ("within_tolerance", f"{len(diffs)} file(s) differ within the documented tolerance atol={atol:g} "
                    f"({tol.get('why', '')}): {described}", diffs)
    return "differs", f"{len(diffs)} of {len(set(a) | set(b))} content files differ: {described}", diffs


# ---- the catalog ------------------------------------------------------------------------------
def rebuild_rows(outcomes: list[RebuildOutcome]) -> list[dict[str, Any]]:
    from ml.catalog import now_utc

    at = now_utc()
    return [{"asset": o.asset, "data_version": o.data_version, "rebuilt_at": at, "identical": o.identical,
             "detail": json.dumps({"status": o.status, "detail": o.detail, "files": o.files[:20]}, default=str)[:20000],
             "rebuilt_version": o.rebuilt_version, "seconds": round(o.seconds, 3)} for o in outcomes]


# ---- the command ------------------------------------------------------------------------------
def cmd_rebuild(args: argparse.Namespace) -> int:
    from ml.catalog import Catalog
    from ml.paths import lineage_home

    asset, _, version = args.target.partition("@")
    if not version:
        raise SystemExit("lineage rebuild: give ASSET@VERSION (a full data version or a unique prefix)")
    home = lineage_home()
    store = ArtifactStore(home)
    matches = [v.data_version for v in store.versions(asset) if v.data_version.startswith(version)]
    if len(matches) != 1:
        raise SystemExit(f"lineage rebuild: {asset}@{version} matches {len(matches)} stored versions")
    runner = importlib.import_module(RUNNER)
    outcomes = runner.rebuild(home, asset, matches[0], recursive=args.recursive,
                              allow_code_change=args.allow_code_change, log=lambda m: print(m, flush=True))
    Catalog(home).append({"rebuilds": rebuild_rows(outcomes)})
    for o in outcomes:
        print(o.line())
    if args.json:
        print(json.dumps([{**asdict(o), "files": o.files[:5]} for o in outcomes], default=str, indent=1))
    return 0 if all(o.reproduced for o in outcomes) else 1


def add_commands(sub) -> None:
    r = sub.add_parser("rebuild", help="build ASSET@VERSION again from its manifest and compare file by file",
                       description="Resolve the version's upstream versions, config and code version from its "
                       "manifest, build it again into a scratch store and compare: identical, within the documented "
                       "tolerance, or which files differ and how. Results go to the catalog table rebuilds.")
    r.add_argument("target", metavar="ASSET@VERSION")
    r.add_argument("--recursive", action="store_true", help="rebuild every upstream version first")
    r.add_argument("--allow-code-change", action="store_true",
                   help="rebuild even when the current code's version differs from the recorded one")
    r.add_argument("--json", action="store_true", help="also print the outcomes as JSON")
    r.set_defaults(func=cmd_rebuild)
