"""The Dagster side of ``lineage rebuild`` (ml/rebuild.py): run an asset again from a version's record.

The exact upstream versions are copied into a scratch store and instance and the asset runs there with the
recorded config; a changed fingerprint is reported as a config change, never as corruption. The steps:
DESIGN.md, "Content and run facts" ("Rebuilding a version").
"""

from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import dagster as dg

from ml.fsutil import scoped_environ, sha256_file, source_files
from ml.paths import ASSET_NAME_RE, landing_dir
from ml.rebuild import RebuildOutcome, code_change, compare_versions, landing_inputs, upstream_closure
from ml.store import ArtifactStore, BuildResult, CorruptVersionError, StoredVersion
from resources import ArtifactStoreResource, CatalogResource, LandingZone, TorchDevice

FINGERPRINT_ONLY = ("torch_device",)  # recorded config keys that are resources, not the asset's own config
UNSUPPORTED = ("checkpoint_refs", "from_sweep")  # versions made from another run's state: not rebuilt here


def asset_def(asset: str) -> dg.AssetsDefinition:
    from assets import ALL_ASSETS

    key = dg.AssetKey(asset)
    for a in ALL_ASSETS:
        if isinstance(a, dg.AssetsDefinition) and key in a.keys:
            return a
    raise ValueError(f"no asset named {asset!r} in this code location")


def _config_fields(adef: dg.AssetsDefinition) -> set[str] | None:
    node = adef.node_def
    mapping = getattr(node, "config_mapping", None)
    schema = mapping.config_schema if mapping is not None else getattr(node, "config_schema", None)
    ctype = getattr(schema, "config_type", None)
    fields = getattr(ctype, "fields", None)
    return set(fields) if fields is not None else None


def run_config(adef: dg.AssetsDefinition, asset: str, recorded: dict[str, Any]) -> dict[str, Any]:
    fields = _config_fields(adef)
    own = {k: v for k, v in recorded.items() if k not in FINGERPRINT_ONLY and (fields is None or k in fields)}
    return {"ops": {adef.node_def.name: {"config": own}}} if own else {}


def torch_device(recorded: dict[str, Any]) -> TorchDevice:
    td = recorded.get("torch_device") or {}
    return TorchDevice(device=td.get("device_type", "cpu"), precision=td.get("precision", "fp32"),
                       seed=td.get("seed", 0), deterministic=td.get("deterministic", False),
                       threads=td.get("threads", 0))


def _copy_version(src: StoredVersion, dest: ArtifactStore) -> StoredVersion:
    """asset@version into ``dest`` with its record (fingerprint, code version, config, upstream)."""
    m = src.manifest

    def build(out: Path) -> BuildResult:
        for f in m["files"]:
            target = out / f["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.file(f["path"]), target)
        return BuildResult(stats=dict(m.get("stats") or {}), rows=m.get("rows"))

    copied = dest.put(src.asset, build, fingerprint=m["fingerprint"], code_version=m.get("code_version") or "",
                      config=m.get("config") or {}, upstream=m.get("upstream") or {}, run_id=m.get("run_id") or "",
                      extra={"code_files": m.get("code_files") or {}})
    if copied.data_version != src.data_version:
        raise RuntimeError(f"copying {src.asset}@{src.data_version} into the scratch store gave "
                           f"{copied.data_version}: the stored files do not match their version")
    return copied


def _copy_landing(home: Path, scratch: Path, wanted: dict[str, str]) -> list[str]:
    """The landing files a raw_docs version was made from (``landing:<file>`` -> sha256 prefix), copied
    into the scratch landing zone; names the ones that are gone or changed."""
    problems = []
    src_dir, dst_dir = landing_dir(home), landing_dir(scratch)
    for key, digest in sorted(wanted.items()):
        rel = key.split(":", 1)[1]
        src = Path(src_dir) / rel
        if not src.is_file() or not sha256_file(src).startswith(digest):
            problems.append(f"{rel} (sha256 {digest}…) is no longer in the landing zone as it was")
            continue
        (dst_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst_dir / rel)
    return problems


@contextmanager
def _scratch(asset: str, keep: bool = False) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=f"rebuild-{asset}-"))
    home = root / "home"
    (home / "landing").mkdir(parents=True)
    (home / "dagster").mkdir()
    try:
        yield home
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def rebuild_one(home: Path, asset: str, version: str, *, allow_code_change: bool = False,
                log: Callable[[str], None] = print) -> RebuildOutcome:
    store = ArtifactStore(home)
    t0 = time.perf_counter()
    try:
        original = store.open(asset, version)  # a corrupt original is corruption, said as such
    except CorruptVersionError as err:
        return RebuildOutcome(asset, version, "failed", f"the stored original is corrupt, nothing to compare: {err}")
    m = original.manifest
    try:
        adef = asset_def(asset)
    except ValueError as exc:
        return RebuildOutcome(asset, version, "failed", str(exc))
    current = adef.code_versions_by_key.get(dg.AssetKey(asset))
    changed = code_change(m, current, source_files(current or ""))
    if changed and not allow_code_change:
        return RebuildOutcome(asset, version, "code_changed",
                              f"refused: {changed}; pass --allow-code-change to rebuild with the current code")
    unsupported = [k for k in UNSUPPORTED if k in (m.get("config") or {})]
    if unsupported:
        return RebuildOutcome(asset, version, "failed", f"not rebuilt: made from another run's state ({unsupported})")
    with _scratch(asset) as scratch:
        sstore = ArtifactStore(scratch)
        for up, up_v in upstream_closure(store, asset, version):
            _copy_version(store.open(up, up_v), sstore)
        missing = _copy_landing(home, scratch, landing_inputs(m))
        if missing:
            return RebuildOutcome(asset, version, "failed", "cannot rebuild: " + "; ".join(missing))
        resources = {"store": ArtifactStoreResource(home=str(scratch)), "catalog": CatalogResource(home=str(scratch)),
                     "landing": LandingZone(path=str(landing_dir(scratch))), "torch_device": torch_device(m.get("config") or {})}
        env = {"LINEAGE_HOME": str(scratch),  # code that asks the environment (work dirs, caches) stays in scratch
               "LINEAGE_TRACKING": "off"}  # a rebuild checks a version; it is not an experiment to track
        with scoped_environ(env), dg.instance_for_test(temp_dir=str(scratch / "dagster")) as instance:
            for up, up_v in sorted((m.get("upstream") or {}).items()):
                if ASSET_NAME_RE.match(up) and sstore.has_version(up, up_v):  # not landing:<file>
                    instance.report_runless_asset_event(dg.AssetMaterialization(
                        asset_key=up, tags={"dagster/data_version": up_v}))
            log(f"rebuilding {asset}@{version} in {scratch}")
            result = dg.materialize([adef], instance=instance, resources=resources, selection=[asset],
                                    run_config=run_config(adef, asset, m.get("config") or {}),
                                    raise_on_error=False)
            mats = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()
                    if e.asset_key == dg.AssetKey(asset)]
            if not result.success or not mats:
                errors = [str(e.event_specific_data.error.message).strip()[:600]
                          for e in result.get_step_failure_events()]
                return RebuildOutcome(asset, version, "failed", "the rebuild failed: " + " | ".join(errors),
                                      seconds=time.perf_counter() - t0)
            new_v = mats[0].tags["dagster/data_version"]
        rebuilt = sstore.get(asset, new_v)
        seconds = time.perf_counter() - t0
        fp_before, fp_after = m.get("fingerprint"), rebuilt.manifest.get("fingerprint")
        if fp_before != fp_after and not changed:
            rec, now = m.get("config") or {}, rebuilt.manifest.get("config") or {}
            keys = sorted(k for k in set(rec) | set(now) if rec.get(k) != now.get(k))
            ups = sorted(k for k in set(m.get("upstream") or {}) | set(rebuilt.manifest.get("upstream") or {})
                         if (m.get("upstream") or {}).get(k) != (rebuilt.manifest.get("upstream") or {}).get(k))
            return RebuildOutcome(asset, version, "config_changed",
                                  f"the recorded inputs no longer resolve the same way (fingerprint {fp_before} -> "
                                  f"{fp_after}): config keys {keys or 'none'}, upstream {ups or 'none'}",
                                  rebuilt_version=new_v, seconds=seconds)
        status, detail, files = compare_versions(original, rebuilt)
        if changed:
            detail = f"with the current code ({changed}): {detail}"
        return RebuildOutcome(asset, version, status, detail, rebuilt_version=new_v, seconds=seconds, files=files)


def rebuild(home: Path, asset: str, version: str, *, recursive: bool = False, allow_code_change: bool = False,
            log: Callable[[str], None] = print) -> list[RebuildOutcome]:
    """asset@version rebuilt and compared (with ``recursive``: every upstream version first)."""
    from assets import ALL_ASSETS

    defined = {k.to_user_string() for a in ALL_ASSETS for k in a.keys}  # not internal entries (raw_docs__unit, ...)
    store = ArtifactStore(home)
    targets = [*upstream_closure(store, asset, version), (asset, version)] if recursive else [(asset, version)]
    targets = [(a, v) for a, v in targets if a in defined or a == asset]
    outcomes = []
    for a, v in targets:
        outcome = rebuild_one(home, a, v, allow_code_change=allow_code_change, log=log)
        log(outcome.line())
        outcomes.append(outcome)
    return outcomes
