"""The artifact store on an S3-compatible object store (``LINEAGE_HOME=s3://bucket/prefix``).

No rename on object storage: a version is built in local scratch, uploaded under its final
content-addressed prefix, and ``manifest.json`` is written LAST, create-only: a prefix without a
manifest is no version, and of two writers of equal content the first manifest wins. A lease object
names each writer while it uploads (``lineage gc`` finds dead ones). Keys: ml/FORMATS.md
("Object-store homes"); the publish rule step by step: DESIGN.md ("Object-store homes").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import socket
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from ml.faults import fault_point
from ml.paths import ASSET_NAME_RE, check_asset_name, check_hex, safe_join
from ml.run_record import is_run_fact
from ml.storage import (StorageUrl, create_only, download, filesystem, home_scratch, is_url, objects, scratch_dir,
                        write_bytes_atomic)
from ml.store_base import (CORRUPT, MANIFEST, ArtifactStore, CorruptVersionError, StoredVersion, _rmtree,
                      hex_ok, verify_tree)

LEASES = "_leases"
SCRATCH_STAGING = "staging"  # <scratch>/staging/<asset>~<pid>~<rand>~<host>/: versions being built
LEASE_TTL_ENV = "LINEAGE_LEASE_TTL_S"
DEFAULT_LEASE_TTL_S = 6 * 3600.0


def lease_ttl_s() -> float:
    return float(os.environ.get(LEASE_TTL_ENV) or DEFAULT_LEASE_TTL_S)


class ObjectArtifactStore(ArtifactStore):
    """The store under an ``s3://bucket/prefix`` home (the local layout as keys); ``ArtifactStore(home)``
    makes one for a URL. ``StoredVersion.path`` is a verified local read copy under ``<scratch>/cache/``."""

    @classmethod
    def serves(cls, home: Path | str) -> bool:
        return is_url(home)

    def __init__(self, home: str):
        self.home = StorageUrl(str(home))
        self.root = self.home / "artifacts"
        self._verified = set()
        self._fetched: dict[tuple[str, str], Path] = {}
        self.scratch = scratch_dir()
        self.cache_root = home_scratch(self.home, "cache")

    @property
    def fs(self):
        return filesystem()

    # ---- keys ------------------------------------------------------------------------------
    def asset_dir(self, asset: str):
        return self.root / check_asset_name(asset)

    def version_dir(self, asset: str, data_version: str):
        return self.asset_dir(asset) / check_hex(data_version, "data version")

    @property
    def staging_root(self) -> Path:
        return self.scratch / SCRATCH_STAGING

    # ---- reads -----------------------------------------------------------------------------
    def _read(self, location: StorageUrl) -> bytes:
        return self.fs.cat_file(location.key)

    def _version(self, asset: str, data_version: str, manifest: dict[str, Any], **kw) -> StoredVersion:
        return StoredVersion(asset, data_version, self.version_dir(asset, data_version), manifest,
                             fetch=lambda: self._materialize(asset, data_version, manifest), **kw)

    def has_version(self, asset: str, data_version: str) -> bool:
        return self.fs.exists((self.version_dir(asset, data_version) / MANIFEST).key)

    def assets(self) -> list[str]:
        names = {self.root.relative(k).split("/", 1)[0] for k in objects(self.root)}
        return sorted(n for n in names if ASSET_NAME_RE.match(n))

    def versions(self, asset: str) -> list[StoredVersion]:
        adir = self.asset_dir(asset)
        keys = [k for k in objects(adir) if k.count("/") - adir.key.count("/") == 2
                and k.endswith("/" + MANIFEST) and hex_ok(k.rsplit("/", 2)[-2])]
        if not keys:
            return []
        found = [self._version(asset, k.rsplit("/", 2)[-2], json.loads(raw))
                 for k, raw in sorted(self.fs.cat(keys, on_error="omit").items())]
        return sorted(found, key=lambda v: (v.manifest.get("created_at", ""), v.data_version))

    # ---- integrity -------------------------------------------------------------------------
    def verify(self, asset: str, data_version: str) -> list[dict[str, Any]]:
        """Problems of the stored objects: a fresh download checked against the manifest."""
        v = self.get(asset, data_version)
        self._drop_read_copy(asset, data_version)
        try:
            self._materialize(asset, data_version, v.manifest)
        except CorruptVersionError as err:
            return err.problems
        return []

    def check(self, version: StoredVersion) -> StoredVersion:
        if (version.asset, version.data_version) not in self._verified:
            self._materialize(version.asset, version.data_version, version.manifest)
        return version

    def _drop_read_copy(self, asset: str, data_version: str) -> None:
        self._fetched.pop((asset, data_version), None)
        self._verified.discard((asset, data_version))
        dest = self.cache_root / asset / data_version
        if dest.exists():
            _rmtree(dest)

    def _materialize(self, asset: str, data_version: str, manifest: Mapping[str, Any]) -> Path:
        """The local read copy of a version: reused when it still matches the manifest, else
        downloaded into a temporary sibling, verified, and renamed into place."""
        key = (asset, data_version)
        if key in self._fetched:
            return self._fetched[key]
        dest = self.cache_root / check_asset_name(asset) / check_hex(data_version)
        if dest.is_dir():
            if not verify_tree(dest, manifest, data_version):
                self._fetched[key] = dest
                self._verified.add(key)
                return dest
            _rmtree(dest)  # a damaged read copy (local disk): fetch it again
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{data_version}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.mkdir()
        try:
            src = self.version_dir(asset, data_version)
            files = list(manifest.get("files") or [])
            local = [safe_join(tmp, f["path"]) for f in files]
            for p in local:
                p.parent.mkdir(parents=True, exist_ok=True)
            remote = [(src / f["path"]).key for f in files]
            try:
                if remote:
                    download(remote, local)
            except FileNotFoundError:  # some object is missing: fetch what is there, verify_tree names the rest
                for r, p in zip(remote, local):
                    try:
                        self.fs.get_file(r, str(p))
                    except FileNotFoundError:
                        pass
            problems = verify_tree(tmp, manifest, data_version)
            if problems:
                raise CorruptVersionError(asset, data_version, src, problems)
            for p in local:  # immutable: read-only files, as in a local store
                p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            try:
                os.rename(tmp, dest)
            except OSError as exc:  # another process put its (verified) copy there first
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        finally:
            if tmp.exists():
                _rmtree(tmp)
        self._fetched[key] = dest
        self._verified.add(key)
        return dest

    def _remote_problems(self, asset: str, data_version: str, manifest: Mapping[str, Any]) -> list[str]:
        """Cheap check of stored objects against a manifest: every file there with its size."""
        vdir = self.version_dir(asset, data_version)
        sizes = {vdir.relative(k): info["size"] for k, info in objects(vdir).items()}
        return [f["path"] for f in manifest.get("files") or [] if sizes.get(f["path"]) != f["bytes"]]

    def quarantine(self, asset: str, data_version: str):
        """Copy the version's objects to ``_corrupt/<asset>/<version>~<stamp>~<rand>/``, then delete
        its manifest (from that moment it is no version), then the rest. Returns the new URL."""
        vdir = self.version_dir(asset, data_version)
        keys = sorted(objects(vdir))
        if not keys or (vdir / MANIFEST).key not in keys:
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = self.root / CORRUPT / asset / f"{data_version}~{stamp}~{secrets.token_hex(2)}"
        self.fs.copy(keys, [(target / vdir.relative(k)).key for k in keys])
        self.fs.rm_file((vdir / MANIFEST).key)
        rest = [k for k in keys if k != (vdir / MANIFEST).key]
        if rest:
            self.fs.rm(rest)
        self._drop_read_copy(asset, data_version)
        return target

    def corrupt_versions(self) -> list:
        cdir = self.root / CORRUPT
        dirs = {(cdir / cdir.relative(k).split("/", 2)[0] / cdir.relative(k).split("/", 2)[1])
                for k in objects(cdir) if cdir.relative(k).count("/") >= 2}
        return sorted(dirs)

    # ---- writes ----------------------------------------------------------------------------
    def _publish(self, asset: str, data_version: str, staging: Path, manifest: dict[str, Any]) -> bool:
        """Upload under the final prefix, manifest last (create-only). True: the version existed already (reused)."""
        reused = False
        if self.has_version(asset, data_version):
            existing = self.get(asset, data_version)
            if self._remote_problems(asset, data_version, existing.manifest):
                self.quarantine(asset, data_version)  # never keep a damaged copy as "the same content"
            else:
                reused = True
        if not reused:
            reused = not self._upload(asset, data_version, staging, manifest["files"], manifest)
        dest = self.cache_root / asset / data_version
        if not reused and not dest.exists():  # the built files become the read copy
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, dest)
                self._fetched[(asset, data_version)] = dest
            except OSError:
                pass
        return reused

    def _write_index(self, asset: str, fingerprint: str, data_version: str) -> None:
        write_bytes_atomic(self._index_path(asset, fingerprint), json.dumps({"data_version": data_version}).encode())

    def _upload(self, asset: str, data_version: str, staging: Path, files: list[dict[str, Any]],
                manifest: dict[str, Any]) -> bool:
        """Lease (renewed while the upload runs: ml/storage_work.py ``Lease``), files, manifest
        (create-only), lease removed. False: another writer's manifest came first."""
        from ml.storage_work import Lease

        lease = self.root / LEASES / (f"{asset}~{data_version}~{os.getpid()}~{secrets.token_hex(4)}~"
                                      f"{socket.gethostname()}.json")
        with Lease(lease, {"asset": asset, "data_version": data_version}, lease_ttl_s(), fs=self.fs):
            return self._upload_files(asset, data_version, staging, files, manifest)

    def _upload_files(self, asset: str, data_version: str, staging: Path, files: list[dict[str, Any]],
                      manifest: dict[str, Any]) -> bool:
        vdir = self.version_dir(asset, data_version)
        listed = {f["path"] for f in files}
        others = [p.relative_to(staging).as_posix() for p in sorted(staging.rglob("*"))  # not in the manifest
                  if p.is_file() and p.name != MANIFEST and p.relative_to(staging).as_posix() not in listed]
        paths = [f["path"] for f in files if not is_run_fact(f["path"])] + others
        half = len(paths) // 2
        for i, part in enumerate((paths[:half], paths[half:])):
            if i == 1:
                fault_point("store.during_upload", asset)
            if part:
                self.fs.put([str(staging / rel) for rel in part], [(vdir / rel).key for rel in part])
        for rel in others:  # the read copy holds the manifest's files only
            (staging / rel).unlink()
        # The run record (_run/) differs between two writers of equal content, under equal keys: each of
        # its objects is created only if absent, and a writer that finds one there adopts it (its manifest
        # lists those bytes), so whichever manifest wins describes the objects in the bucket.
        for f in files:
            if is_run_fact(f["path"]):
                local = staging / f["path"]
                if not create_only(vdir / f["path"], local.read_bytes()):
                    theirs = self.fs.cat_file((vdir / f["path"]).key)
                    f["sha256"], f["bytes"] = hashlib.sha256(theirs).hexdigest(), len(theirs)
                    local.chmod(0o644)
                    local.write_bytes(theirs)
                    local.chmod(0o444)
        fault_point("store.before_publish")
        return create_only(vdir / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True, default=str)
                                             + "\n").encode())
