"""The artifact store in a local directory (``<home>/artifacts``).

A version is published by renaming its staging directory (``artifacts/_staging/``, fsynced first)
to ``<asset>/<data_version>/``: a crash leaves no version or a whole one. If that version exists
already, the staging copy is dropped, unless the existing copy fails verification: then it is
quarantined and this one published (a corrupt copy is never kept as "the same content").
"""

from __future__ import annotations

import errno
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ml.faults import fault_point
from ml.fsutil import atomic_write_json, fsync_dir, fsync_tree
from ml.paths import ASSET_NAME_RE, artifacts_dir, check_asset_name, check_hex, safe_join
from ml.storage import is_url
from ml.store_base import (CORRUPT, MANIFEST, STAGING, ArtifactStore, CorruptVersionError, StoredVersion, hex_ok,
                      verify_tree)


class LocalArtifactStore(ArtifactStore):
    """The store under ``<home>/artifacts``; ``ArtifactStore(home)`` makes one for a local home."""

    @classmethod
    def serves(cls, home: Path | str) -> bool:
        return not is_url(home)

    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = artifacts_dir(self.home)
        self._verified: set[tuple[str, str]] = set()

    # ---- paths -------------------------------------------------------------------------
    def asset_dir(self, asset: str) -> Path:
        return safe_join(self.root, check_asset_name(asset))

    def version_dir(self, asset: str, data_version: str) -> Path:
        return safe_join(self.asset_dir(asset), check_hex(data_version, "data version"))

    @property
    def staging_root(self) -> Path:
        return self.root / STAGING

    # ---- reads -------------------------------------------------------------------------
    def _read(self, location: Path) -> bytes:
        if not location.is_file():
            raise FileNotFoundError(location)
        return location.read_bytes()

    def _version(self, asset: str, data_version: str, manifest: dict[str, Any], **kw) -> StoredVersion:
        return StoredVersion(asset, data_version, self.version_dir(asset, data_version), manifest, **kw)

    def has_version(self, asset: str, data_version: str) -> bool:
        return (self.version_dir(asset, data_version) / MANIFEST).is_file()

    def assets(self) -> list[str]:
        """Names of the assets that have a directory in the store."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and ASSET_NAME_RE.match(p.name))

    def versions(self, asset: str) -> list[StoredVersion]:
        """All complete versions of an asset, oldest first."""
        adir = self.asset_dir(asset)
        if not adir.is_dir():
            return []
        found = [self.get(asset, child.name) for child in adir.iterdir()
                 if hex_ok(child.name) and (child / MANIFEST).is_file()]
        return sorted(found, key=lambda v: (v.manifest.get("created_at", ""), v.data_version))

    # ---- integrity ---------------------------------------------------------------------------
    def verify(self, asset: str, data_version: str) -> list[dict[str, Any]]:
        """Problems of one stored version (``verify_tree``); [] when every file matches its manifest."""
        v = self.get(asset, data_version)
        return verify_tree(v.path, v.manifest, data_version)

    def check(self, version: StoredVersion) -> StoredVersion:
        key = (version.asset, version.data_version)
        if key not in self._verified:
            problems = verify_tree(version.path, version.manifest, version.data_version)
            if problems:
                raise CorruptVersionError(version.asset, version.data_version, version.path, problems)
            self._verified.add(key)
        return version

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
    def _write_index(self, asset: str, fingerprint: str, data_version: str) -> None:
        atomic_write_json(self._index_path(asset, fingerprint), {"data_version": data_version})

    def _publish(self, asset: str, data_version: str, staging: Path, manifest: dict[str, Any]) -> bool:
        """Manifest, fsync, atomic rename to the final directory. True: the version existed already (reused)."""
        atomic_write_json(staging / MANIFEST, manifest)
        fsync_tree(staging)
        final = self.version_dir(asset, data_version)
        final.parent.mkdir(parents=True, exist_ok=True)
        fault_point("store.before_publish")
        for attempt in range(2):
            try:
                os.rename(staging, final)
                fsync_dir(final.parent)
                return False
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not self.has_version(asset, data_version):
                    raise
                existing = self.get(asset, data_version)
                if attempt == 0 and verify_tree(existing.path, existing.manifest, data_version):
                    self.quarantine(asset, data_version)  # never keep a corrupt copy as "the same content"
                    continue
                return True  # same content by another road: keep the existing version
        return True
