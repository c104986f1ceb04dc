"""Immutable, content-addressed artifact store.

Layout under ``<home>/artifacts``::

    <asset>/<data_version>/          one immutable version (files + manifest.json)
    <asset>/_fingerprints/<fp>.json  fingerprint -> data_version index (cache lookups)
    _staging/<asset>-<pid>-<rand>/   versions being written; never visible as versions

Life of a write (``ArtifactStore.put``):

1. ``build(tmp_dir)`` writes the files into a private staging directory.
2. The data version is the digest of the files' relative paths and sha256s
   (``manifest.json`` excluded), so equal content gives an equal version whatever
   run made it.
3. ``manifest.json`` is written into the staging directory, everything is fsynced,
   and the directory is renamed to ``<asset>/<data_version>``. Rename is atomic:
   a crash at any moment leaves either no version or a complete one. If that
   version exists already (same content by another road), the staging copy is
   dropped and the existing version is reused.
4. The fingerprint index entry is written (atomically) last. A crash before it
   only costs a recomputation that lands on the same version.

Staging directories of dead processes are removed by the next write (and by ``lineage gc``).

Integrity on read: ``open`` (a version a step reads) and ``lookup`` (a version reused as a
cache hit) check every file against the manifest (size, then sha256, streamed), once per
``ArtifactStore`` instance, and raise ``CorruptVersionError`` naming the file and both
digests. ``quarantine`` moves a corrupt version to ``_corrupt/<asset>/<version>~<stamp>/`` so
it is never served again (a fingerprint pointing at it becomes a miss: the next run rebuilds it).
``put`` never keeps a corrupt existing copy as "the same content by another road".
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from ml.faults import fault_point
from ml.fsutil import atomic_write_json, digest_json, fsync_dir, fsync_tree, pid_alive, sha256_file
from ml.paths import artifacts_dir, check_asset_name, check_hex, safe_join

MANIFEST = "manifest.json"
VERSION_LEN = 16
FINGERPRINT_LEN = 16
STAGING = "_staging"
INDEX = "_fingerprints"
CORRUPT = "_corrupt"


class CorruptVersionError(RuntimeError):
    """A stored version whose files differ from its manifest (or whose manifest differs from its name).

    ``problems``: one dict per bad file: path, expected_sha256, actual_sha256, expected_bytes,
    actual_bytes (``None`` where there is nothing to compare: a missing or unlisted file)."""

    def __init__(self, asset: str, data_version: str, path: Path, problems: list[dict[str, Any]]):
        self.asset, self.data_version, self.path, self.problems = asset, data_version, Path(path), problems
        shown = "; ".join(describe_problem(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{asset}@{data_version} is corrupt ({len(problems)} file(s) differ from its manifest, "
                         f"{path}): {shown}{more}")


def describe_problem(p: dict[str, Any]) -> str:
    if p["actual_sha256"] is None and p["actual_bytes"] is None:
        return f"{p['path']}: {p.get('why') or 'missing'}"
    if p["expected_sha256"] is None:
        return f"{p['path']}: {p.get('why') or 'not in the manifest'}"
    if p["expected_bytes"] != p["actual_bytes"]:
        return (f"{p['path']}: {p['actual_bytes']} bytes, manifest says {p['expected_bytes']} "
                f"(sha256 {p['actual_sha256'] or 'not computed'}, manifest {p['expected_sha256']})")
    return f"{p['path']}: sha256 {p['actual_sha256']}, manifest {p['expected_sha256']}"


def verify_tree(root: Path, manifest: Mapping[str, Any], data_version: str | None = None) -> list[dict[str, Any]]:
    """Compare the files under ``root`` with ``manifest["files"]``: size first (free), then sha256
    (streamed, 1 MiB at a time). Also: files the manifest does not list, and (given
    ``data_version``) a manifest whose file list does not digest to that version. [] = intact."""
    problems: list[dict[str, Any]] = []

    def bad(path, exp_sha, act_sha, exp_bytes, act_bytes, why=""):
        problems.append({"path": path, "expected_sha256": exp_sha, "actual_sha256": act_sha,
                         "expected_bytes": exp_bytes, "actual_bytes": act_bytes, "why": why})

    listed = manifest.get("files") or []
    if data_version is not None and content_version(listed) != data_version:
        bad(MANIFEST, data_version, content_version(listed), None, None,
            "its file list digests to another version than the directory name")
    names = set()
    for f in listed:
        rel = f["path"]
        names.add(rel)
        path = safe_join(root, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            bad(rel, f["sha256"], None, f["bytes"], None, "listed in the manifest but missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            bad(rel, f["sha256"], None, f["bytes"], None, "not a regular file")
            continue
        if st.st_size != f["bytes"]:
            bad(rel, f["sha256"], None, f["bytes"], st.st_size)
            continue
        actual = sha256_file(path)
        if actual != f["sha256"]:
            bad(rel, f["sha256"], actual, f["bytes"], st.st_size)
    for dirpath, dirs, files in os.walk(root):
        for name in files:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel != MANIFEST and rel not in names:
                bad(rel, None, "unlisted", None, os.lstat(Path(dirpath) / name).st_size, "not in the manifest")
    return problems


def compute_fingerprint(
    asset: str, code_version: str, config: Mapping[str, Any], upstream: Mapping[str, str]
) -> str:
    """digest(asset, code version, resolved config, upstream data versions)."""
    return digest_json(
        {"asset": asset, "code_version": code_version, "config": dict(config), "upstream": dict(upstream)},
        FINGERPRINT_LEN,
    )


def list_files(root: Path) -> list[dict[str, Any]]:
    """Every regular file under root (manifest excluded), sorted, with sha256 and size."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if rel == MANIFEST:
                continue
            if full.is_symlink() or not full.is_file():
                raise ValueError(f"artifact file {rel!r} is not a regular file")
            out.append({"path": rel, "sha256": sha256_file(full), "bytes": full.stat().st_size})
    out.sort(key=lambda f: f["path"])
    return out


def content_version(files: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f['path']}\t{f['sha256']}\n".encode())
    return h.hexdigest()[:VERSION_LEN]


@dataclass(frozen=True)
class StoredVersion:
    asset: str
    data_version: str
    path: Path
    manifest: dict[str, Any]
    cache_hit: bool = False  # found by fingerprint, nothing computed
    reused_content: bool = False  # computed, but an identical version existed already

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.get("stats", {})

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest.get("files", []))

    def file(self, relpath: str) -> Path:
        return safe_join(self.path, relpath)

    def writer_alive(self) -> bool:
        """Whether the process that published this version may still be recording it (same host and
        its pid alive; another host: always assumed alive). Old manifests name no writer: False."""
        w = self.manifest.get("writer") or {}
        if not w.get("pid"):
            return False
        return w.get("host") != socket.gethostname() or pid_alive(int(w["pid"]))


@dataclass
class BuildResult:
    """What a build function reports besides the files it wrote."""

    stats: dict[str, Any] = field(default_factory=dict)
    rows: int | None = None


class ArtifactStore:
    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = artifacts_dir(self.home)
        self._verified: set[tuple[str, str]] = set()  # checked once per instance (one step, one command)

    # ---- paths -------------------------------------------------------------------------
    def asset_dir(self, asset: str) -> Path:
        return safe_join(self.root, check_asset_name(asset))

    def version_dir(self, asset: str, data_version: str) -> Path:
        return safe_join(self.asset_dir(asset), check_hex(data_version, "data version"))

    def _index_path(self, asset: str, fingerprint: str) -> Path:
        return self.asset_dir(asset) / INDEX / f"{check_hex(fingerprint, 'fingerprint')}.json"

    # ---- reads -------------------------------------------------------------------------
    def has_version(self, asset: str, data_version: str) -> bool:
        return (self.version_dir(asset, data_version) / MANIFEST).is_file()

    def get(self, asset: str, data_version: str) -> StoredVersion:
        vdir = self.version_dir(asset, data_version)
        mpath = vdir / MANIFEST
        if not mpath.is_file():
            raise FileNotFoundError(f"{asset}@{data_version} is not in the store at {self.root}")
        return StoredVersion(asset, data_version, vdir, json.loads(mpath.read_text("utf-8")))

    def versions(self, asset: str) -> list[StoredVersion]:
        """All complete versions of an asset, oldest first."""
        adir = self.asset_dir(asset)
        if not adir.is_dir():
            return []
        found = []
        for child in adir.iterdir():
            try:
                check_hex(child.name)
            except ValueError:
                continue
            if (child / MANIFEST).is_file():
                found.append(self.get(asset, child.name))
        return sorted(found, key=lambda v: (v.manifest.get("created_at", ""), v.data_version))

    def lookup(self, asset: str, fingerprint: str, verify: bool = True) -> StoredVersion | None:
        """The version already made for this fingerprint, if it is still in the store; verified
        against its manifest (``CorruptVersionError``) unless ``verify=False``."""
        ipath = self._index_path(asset, fingerprint)
        if not ipath.is_file():
            return None
        try:
            data_version = json.loads(ipath.read_text("utf-8"))["data_version"]
            found = self.get(asset, data_version)
        except (FileNotFoundError, KeyError, ValueError):
            return None
        if verify:
            self.check(found)
        return StoredVersion(asset, data_version, found.path, found.manifest, cache_hit=True)

    # ---- integrity ---------------------------------------------------------------------------
    def verify(self, asset: str, data_version: str) -> list[dict[str, Any]]:
        """Problems of one stored version (``verify_tree``); [] when every file matches its manifest."""
        v = self.get(asset, data_version)
        return verify_tree(v.path, v.manifest, data_version)

    def check(self, version: StoredVersion) -> StoredVersion:
        """``version`` once verified (per instance), else ``CorruptVersionError``."""
        key = (version.asset, version.data_version)
        if key not in self._verified:
            problems = verify_tree(version.path, version.manifest, version.data_version)
            if problems:
                raise CorruptVersionError(version.asset, version.data_version, version.path, problems)
            self._verified.add(key)
        return version

    def open(self, asset: str, data_version: str) -> StoredVersion:
        """``get`` + ``check``: the version a step is about to read, verified against its manifest."""
        return self.check(self.get(asset, data_version))

    def quarantine(self, asset: str, data_version: str) -> Path | None:
        """Move a corrupt version out of the way (atomic rename) to ``_corrupt/<asset>/<version>~<stamp>``,
        so it is never read or reused again; the next build of that content publishes a fresh copy.
        Returns the new path (None when the version is no longer there)."""
        vdir = self.version_dir(asset, data_version)
        if not vdir.is_dir():
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = self.root / CORRUPT / asset / f"{data_version}~{stamp}~{secrets.token_hex(2)}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(vdir, target)
        except FileNotFoundError:  # someone else moved it first
            return None
        fsync_dir(vdir.parent)
        self._verified.discard((asset, data_version))
        return target

    def corrupt_versions(self) -> list[Path]:
        """Versions moved aside by ``quarantine`` (kept for inspection; ``lineage gc`` lists them)."""
        cdir = self.root / CORRUPT
        return sorted(p for p in cdir.glob("*/*") if p.is_dir()) if cdir.is_dir() else []

    # ---- writes ------------------------------------------------------------------------
    def put(
        self,
        asset: str,
        build: Callable[[Path], BuildResult | None],
        *,
        fingerprint: str,
        code_version: str,
        config: Mapping[str, Any],
        upstream: Mapping[str, str],
        run_id: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> StoredVersion:
        """Run ``build`` into a staging directory and publish it as an immutable version."""
        check_asset_name(asset)
        check_hex(fingerprint, "fingerprint")
        self.collect_garbage()
        staging = self._new_staging(asset)
        try:
            result = build(staging) or BuildResult()
            files = list_files(staging)
            if not files:
                raise ValueError(f"build for {asset} wrote no files")
            data_version = content_version(files)
            manifest = {
                "asset": asset,
                "data_version": data_version,
                "code_version": code_version,
                "fingerprint": fingerprint,
                "config": dict(config),
                "upstream": dict(upstream),
                "run_id": run_id,
                "created_at": datetime.now(timezone.utc).isoformat(),
                "files": files,
                "rows": result.rows,
                "stats": result.stats,
                "writer": {"pid": os.getpid(), "host": socket.gethostname()},  # for repairs: is its maker alive?
                **(dict(extra) if extra else {}),
            }
            atomic_write_json(staging / MANIFEST, manifest)
            for f in files:  # immutable: read-only files
                p = staging / f["path"]
                p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            fsync_tree(staging)
            final = self.version_dir(asset, data_version)
            final.parent.mkdir(parents=True, exist_ok=True)
            reused = False
            fault_point("store.before_publish")
            for attempt in range(2):
                try:
                    os.rename(staging, final)
                    fsync_dir(final.parent)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not self.has_version(asset, data_version):
                        raise
                    existing = self.get(asset, data_version)
                    if attempt == 0 and verify_tree(existing.path, existing.manifest, data_version):
                        self.quarantine(asset, data_version)  # never keep a corrupt copy as "the same content"
                        continue
                    reused = True  # same content by another road: keep the existing version
                    break
            fault_point("store.after_publish")
        finally:
            if staging.exists():
                _rmtree(staging)
        atomic_write_json(self._index_path(asset, fingerprint), {"data_version": data_version})
        stored = self.get(asset, data_version)
        if not reused:
            self._verified.add((asset, data_version))  # just hashed by list_files
        return StoredVersion(asset, data_version, stored.path, stored.manifest, reused_content=reused)

    def _new_staging(self, asset: str) -> Path:
        sdir = self.root / STAGING
        sdir.mkdir(parents=True, exist_ok=True)
        path = sdir / f"{asset}~{os.getpid()}~{secrets.token_hex(4)}~{socket.gethostname()}"
        path.mkdir()
        return path

    def collect_garbage(self) -> int:
        """Remove staging directories left by processes on this host that no longer run."""
        sdir = self.root / STAGING
        if not sdir.is_dir():
            return 0
        host = socket.gethostname()
        removed = 0
        for child in sdir.iterdir():
            parts = child.name.split("~", 3)
            if len(parts) != 4 or parts[3] != host:
                continue
            try:
                pid = int(parts[1])
            except ValueError:
                continue
            if not pid_alive(pid):
                _rmtree(child)
                removed += 1
        return removed


def _rmtree(path: Path) -> None:
    def onerror(func, p, _exc):  # read-only files inside a read-only dir
        os.chmod(p, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
        func(p)

    shutil.rmtree(path, onerror=onerror)
