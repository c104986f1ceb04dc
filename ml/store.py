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

Staging directories of dead processes are removed by the next write.
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

from ml.fsutil import atomic_write_json, digest_json, fsync_dir, fsync_tree, pid_alive, sha256_file
from ml.paths import artifacts_dir, check_asset_name, check_hex, safe_join

MANIFEST = "manifest.json"
VERSION_LEN = 16
FINGERPRINT_LEN = 16
STAGING = "_staging"
INDEX = "_fingerprints"


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


@dataclass
class BuildResult:
    """What a build function reports besides the files it wrote."""

    stats: dict[str, Any] = field(default_factory=dict)
    rows: int | None = None


class ArtifactStore:
    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = artifacts_dir(self.home)

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

    def lookup(self, asset: str, fingerprint: str) -> StoredVersion | None:
        """The version already made for this fingerprint, if it is still in the store."""
        ipath = self._index_path(asset, fingerprint)
        if not ipath.is_file():
            return None
        try:
            data_version = json.loads(ipath.read_text("utf-8"))["data_version"]
            found = self.get(asset, data_version)
        except (FileNotFoundError, KeyError, ValueError):
            return None
        return StoredVersion(asset, data_version, found.path, found.manifest, cache_hit=True)

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
            try:
                os.rename(staging, final)
                fsync_dir(final.parent)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not self.has_version(asset, data_version):
                    raise
                reused = True  # same content by another road: keep the existing version
        finally:
            if staging.exists():
                _rmtree(staging)
        atomic_write_json(self._index_path(asset, fingerprint), {"data_version": data_version})
        stored = self.get(asset, data_version)
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
