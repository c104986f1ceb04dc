"""``lineage gc``: leftovers of dead writers, versions the catalog missed, corrupt versions set aside.

    lineage gc                      dry run: list what --apply would remove and what --repair would record
    lineage gc --apply              remove the leftovers of dead writers
    lineage gc --repair             record store versions missing from the catalog (from their manifests)
    lineage gc --min-age SECONDS    age after which a leftover whose owner cannot be checked counts (86400)

A leftover's owner must be provably dead (this host: pid gone) or it must be older than --min-age.
What counts as a leftover, locally and on an s3:// home: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ml.fsutil import pid_alive
from ml.paths import artifacts_dir, catalog_dir, lineage_home
from ml.storage import is_url, scratch_dir

DEFAULT_MIN_AGE_S = 86_400.0
TMP_MAX_AGE_S = 3_600.0


@dataclass(frozen=True)
class Leftover:
    kind: str  # artifact staging | catalog staging | temporary file; object store: upload lease |
    #           partial upload | catalog upload | scratch staging
    path: Path  # or an s3:// URL (ml.storage.StorageUrl)
    why: str
    bytes: int


def _size(path: Path) -> int:
    if path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _owner_state(pid: int | None, host: str | None, age: float, min_age: float) -> str | None:
    """Why a staging entry is a leftover, or None while its owner may still write it."""
    if pid is not None and host == socket.gethostname():
        return None if pid_alive(pid) else f"writer pid {pid} on this host is dead"
    if age >= min_age:
        owner = f"writer pid {pid} on {host}" if host else "no owner recorded"
        return f"{owner}, {age / 3600:.1f} h old (>= {min_age / 3600:.1f} h)"
    return None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def find_leftovers(home: Path, min_age_s: float = DEFAULT_MIN_AGE_S, now: float | None = None) -> list[Leftover]:
    now = time.time() if now is None else now
    if is_url(home):
        return find_object_leftovers(home, min_age_s, now)
    out: list[Leftover] = []
    art, cat = artifacts_dir(home), catalog_dir(home)

    def age(p: Path) -> float:
        return now - p.lstat().st_mtime

    staging = art / "_staging"
    for child in sorted(staging.iterdir()) if staging.is_dir() else []:
        parts = child.name.split("~", 3)  # <asset>~<pid>~<rand>~<host>
        pid, host = (_int(parts[1]), parts[3]) if len(parts) == 4 else (None, None)
        why = _owner_state(pid, host, age(child), min_age_s)
        if why:
            out.append(Leftover("artifact staging", child, why, _size(child)))

    cstaging = cat / "_staging"
    for child in sorted(cstaging.iterdir()) if cstaging.is_dir() else []:
        parts = child.name.split("~", 3)  # <batch>~<pid>~<rand>~<host>; before: <stamp>-<ns>-<pid>-<hex>
        if len(parts) == 4:
            pid, host = _int(parts[1]), parts[3]
        else:
            fields = child.name.split("-")
            pid, host = (_int(fields[2]) if len(fields) == 4 else None), None
        why = _owner_state(pid, host, age(child), min_age_s)
        if why:
            out.append(Leftover("catalog staging", child, why, _size(child)))

    out += _absorbed_leftovers(home)

    tmp_age = min(min_age_s, TMP_MAX_AGE_S)
    tmp_dirs = [*(sorted(art.glob("*/_fingerprints")) if art.is_dir() else []), cat / "batches" / "_schema", cat]
    for d in tmp_dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file() and age(p) >= tmp_age:
                out.append(Leftover("temporary file", p, f"atomic-write temporary, {age(p):.0f} s old", _size(p)))
    return out


def _absorbed_leftovers(home, sizes: dict[str, int] | None = None) -> list[Leftover]:
    """Batches a committed compaction absorbed that are still there ``keep_absorbed_s()`` after it
    committed (a reader whose listing began before that commit may still read them until then).
    ``sizes``: object key -> bytes. Creates nothing (no catalog: none)."""
    from ml.catalog import Catalog, keep_absorbed_s

    cat = Catalog(home)
    if not is_url(home) and not cat.batches.is_dir():
        return []
    snap = cat._snapshot(init=False)
    out = []
    for b in snap.expired(keep_absorbed_s()):
        path = cat.batches / b
        size = sum((sizes or {}).get(k, 0) for k in snap.keys.get(b, [])) if is_url(home) else _size(path)
        out.append(Leftover("absorbed batch", path, f"absorbed by compaction {snap.absorber(b)}", size))
    return out


def _scratch_leftovers() -> list[Leftover]:
    """Local staging directories (scratch space of s3 homes) of dead processes on this host."""
    sdir = scratch_dir() / "staging"
    out = []
    for child in sorted(sdir.iterdir()) if sdir.is_dir() else []:
        parts = child.name.split("~", 3)
        if len(parts) == 4 and parts[3] == socket.gethostname() and _int(parts[1]) and not pid_alive(int(parts[1])):
            out.append(Leftover("scratch staging", child, f"writer pid {parts[1]} on this host is dead", _size(child)))
    return out


def _lease_state(lease: dict, now: float) -> str | None:
    """Why an upload lease is dead, or None while its writer may still upload (ml/storage_work.py
    ``lease_dead``: this host's pid gone, or not renewed within its TTL)."""
    from ml.storage_work import lease_dead

    return lease_dead(lease, now)


def find_object_leftovers(home, min_age_s: float, now: float) -> list[Leftover]:
    """Leftovers on an object-store home (``ml/store.py``: ObjectArtifactStore, ``ml/catalog.py``: ObjectCatalog):

    - ``artifacts/_leases/<...>.json`` of dead writers (same host: pid gone; else: not renewed within its TTL);
    - ``artifacts/<asset>/<version>/`` prefixes without ``manifest.json`` (never a version) whose
      writers' leases are all dead, or that no lease names and are older than ``min_age_s``;
    - ``catalog/batches/<batch>/<writer>/`` uploads never committed (writer dead, or older than
      ``min_age_s``) or whose batch another writer committed;
    - local scratch staging directories of dead processes on this host.
    """
    import json

    from ml.catalog import BATCHES, COMMIT, SCHEMA_BATCH
    from ml.paths import HEX_RE
    from ml.storage import filesystem
    from ml.store import LEASES, MANIFEST

    fs = filesystem()
    out: list[Leftover] = []
    art, cat = artifacts_dir(home), catalog_dir(home)

    def listing(url) -> dict[str, dict]:
        from ml.storage import objects

        return objects(url)

    def mtime(info: dict) -> float:
        m = info.get("mtime") or info.get("last_modified")
        return m.timestamp() if hasattr(m, "timestamp") else float(m or now)

    objects = listing(art)
    leases: dict[tuple[str, str], list[str | None]] = {}
    lease_keys = [k for k in objects if art.relative(k).startswith(LEASES + "/")]
    for key, raw in sorted(fs.cat(lease_keys, on_error="omit").items()) if lease_keys else []:
        try:
            lease = json.loads(raw)
        except ValueError:
            lease = {}
        why = _lease_state(lease, now)
        leases.setdefault((lease.get("asset", ""), lease.get("data_version", "")), []).append(why)
        if why:
            out.append(Leftover("upload lease", home.__class__("s3://" + key), why, objects[key]["size"]))
    prefixes: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for key, info in objects.items():
        parts = art.relative(key).split("/")
        if len(parts) >= 3 and HEX_RE.match(parts[1]) and not parts[0].startswith("_"):
            prefixes.setdefault((parts[0], parts[1]), []).append((key, info))
    for (asset, version), objs in sorted(prefixes.items()):
        if any(k.endswith("/" + MANIFEST) and art.relative(k) == f"{asset}/{version}/{MANIFEST}" for k, _ in objs):
            continue
        states = leases.get((asset, version))
        newest = max(mtime(i) for _, i in objs)
        if states is not None:
            if any(w is None for w in states):
                continue  # a live writer is uploading it
            why = "never published (no manifest); " + "; ".join(w for w in states if w)
        elif now - newest >= min_age_s:
            why = f"never published (no manifest), no lease, {(now - newest) / 3600:.1f} h old"
        else:
            continue
        out.append(Leftover("partial upload", art / asset / version, why, sum(i["size"] for _, i in objs)))

    batches = cat / BATCHES
    objects = listing(batches)
    uploads: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    commits = []
    for key, info in objects.items():
        parts = batches.relative(key).split("/")
        if parts[0] == SCHEMA_BATCH:
            continue
        if len(parts) == 2 and parts[1] == COMMIT:
            commits.append(key)
        elif len(parts) == 3:
            uploads.setdefault((parts[0], parts[1]), []).append((key, info))
    winners = {}
    for key, raw in fs.cat(commits, on_error="omit").items() if commits else []:
        winners[batches.relative(key).split("/")[0]] = json.loads(raw).get("writer")
    absorbed = _absorbed_leftovers(home, {k: i["size"] for k, i in objects.items()})
    out += absorbed
    gone = {x.path.name for x in absorbed}
    for (batch, writer), objs in sorted(uploads.items()):
        if winners.get(batch) == writer or batch in gone:
            continue
        if batch in winners:
            why = f"batch committed by another writer ({winners[batch]})"
        else:
            pid, _, host = (writer.split("~", 2) + ["", ""])[:3]
            age = now - max(mtime(i) for _, i in objs)
            why = _owner_state(_int(pid), host, age, min_age_s)
            if not why:
                continue
            why = "never committed; " + why
        out.append(Leftover("catalog upload", batches / batch / writer, why, sum(i["size"] for _, i in objs)))
    return out + _scratch_leftovers()


def remove(leftover: Leftover) -> None:
    path = leftover.path
    if leftover.kind == "absorbed batch":  # as a compaction removes them: atomically out of every listing
        from ml.catalog import Catalog

        home = path.parent.parent.parent
        Catalog(home).remove_batches([path.name])
        return
    if is_url(path):
        from ml.storage import filesystem
        from ml.store import MANIFEST

        fs = filesystem()
        if leftover.kind == "partial upload":
            if fs.exists((path / MANIFEST).key):  # published meanwhile by a live writer: a version now
                return
        fs.rm(path.key, recursive=True)
        return
    if path.is_dir() and not path.is_symlink():
        def onerror(func, p, _exc):  # read-only files inside a read-only dir
            os.chmod(p, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
            func(p)

        shutil.rmtree(path, onerror=onerror)
    else:
        path.unlink(missing_ok=True)


def missing_from_catalog(home: Path):
    """Store versions the catalog has no asset_versions row for, oldest first."""
    from ml.catalog import Catalog
    from ml.store import ArtifactStore

    store, catalog = ArtifactStore(home), Catalog(home)
    known = set(catalog.query("SELECT DISTINCT asset, data_version FROM asset_versions").rows())
    out = []
    for asset in store.assets():
        if "__" in asset:  # a stage's stored units (ml/curation_units.py): never catalog rows
            continue
        out += [v for v in store.versions(asset) if (v.asset, v.data_version) not in known]
    return out


def cmd_gc(args: argparse.Namespace) -> int:
    from ml.catalog import Catalog
    from ml.store import ArtifactStore

    home = lineage_home(args.home)
    leftovers = find_leftovers(home, min_age_s=args.min_age)
    verb = "removed" if args.apply else "would remove"
    for x in leftovers:
        if args.apply:
            remove(x)
        print(f"{verb} {x.kind}: {x.path} ({x.bytes} bytes; {x.why})")
    if not leftovers:
        print("no leftovers of dead writers")
    missing = missing_from_catalog(home)
    catalog = Catalog(home)
    for v in missing:
        if args.repair:
            if catalog.repair_version(v):
                print(f"recorded in the catalog: {v.asset}@{v.data_version} "
                      f"(run {v.manifest.get('run_id') or '?'}, {v.manifest.get('created_at')})")
            else:
                print(f"left alone: {v.asset}@{v.data_version} (its writer still runs, or it was recorded meanwhile)")
        else:
            print(f"not in the catalog: {v.asset}@{v.data_version} (gc --repair records it)")
    for p in ArtifactStore(home).corrupt_versions():
        print(f"kept for inspection: corrupt version {p.parent.name}@{p.name} (see the corrupt_versions table)")
    if not args.apply and leftovers:
        print(f"dry run: {len(leftovers)} leftover(s), {sum(x.bytes for x in leftovers)} bytes; --apply removes them")
    if args.repair:
        try:
            catalog.ensure_views()
        except Exception as exc:  # someone holds catalog.duckdb; the rows are written either way
            print(f"note: could not refresh {catalog.db_path}: {exc}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    g = sub.add_parser("gc", help="list (and with --apply remove) leftovers of dead writers; --repair the catalog",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--apply", action="store_true", help="remove the leftovers (default: dry run, list only)")
    g.add_argument("--repair", action="store_true", help="record store versions the catalog misses")
    g.add_argument("--min-age", type=float, default=DEFAULT_MIN_AGE_S, metavar="SECONDS",
                   help="age after which a leftover whose owner cannot be checked counts (default: a day)")
    g.set_defaults(func=cmd_gc)
