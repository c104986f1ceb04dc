"""Immutable, content-addressed artifact store.

Layout under ``<home>/artifacts``::

    <asset>/<data_version>/          one immutable version (files + manifest.json)
    <asset>/_fingerprints/<fp>.json  fingerprint -> data_version index (cache lookups)
    _staging/<asset>~<pid>~<rand>~<host>/   versions being written; never visible as versions

Life of a write (``ArtifactStore.put``):

1. ``build(tmp_dir)`` writes the files into a private staging directory.
2. The data version is the digest of the files' relative paths and sha256s
   (``manifest.json`` and the run record ``_run/`` excluded), so equal content gives an
   equal version whatever run made it.
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
from ml.paths import ASSET_NAME_RE, artifacts_dir, check_asset_name, check_hex, safe_join
from ml.storage import is_url
from ml.run_record import is_run_fact

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
        self.asset, self.data_version, self.problems = asset, data_version, problems
        self.path = path if is_url(path) else Path(path)  # a local directory or an s3:// URL
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
    """The data version: digest of the content files' paths and sha256s (run facts under ``_run/``
    are listed and verified, but left out: ml/run_record.py)."""
    h = hashlib.sha256()
    for f in files:
        if is_run_fact(f["path"]):
            continue
        h.update(f"{f['path']}\t{f['sha256']}\n".encode())
    return h.hexdigest()[:VERSION_LEN]


@dataclass(frozen=True)
class StoredVersion:
    asset: str
    data_version: str
    location: Path | str  # where it is stored: a local directory, or an s3:// URL (ml/storage.py)
    manifest: dict[str, Any]
    cache_hit: bool = False  # found by fingerprint, nothing computed
    reused_content: bool = False  # computed, but an identical version existed already
    fetch: Callable[[], Path] | None = field(default=None, compare=False, repr=False)

    @property
    def path(self) -> Path:
        """A local directory with the version's files: the stored directory itself, or (object
        store) a read copy in scratch space, downloaded on first use and verified against the manifest."""
        return self.fetch() if self.fetch is not None else Path(self.location)

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
    run_facts: dict[str, Any] = field(default_factory=dict)  # numbers of this run, not content (ml/run_record.py)



def stage_version(staging: Path, asset: str, build: Callable[[Path], BuildResult | None], *, fingerprint: str,
                  code_version: str, config: Mapping[str, Any], upstream: Mapping[str, str], run_id: str,
                  extra: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Run ``build`` into ``staging``, make its files read-only; (data version, manifest). Both stores publish this."""
    result = build(staging) or BuildResult()
    files = list_files(staging)
    if not files:
        raise ValueError(f"build for {asset} wrote no files")
    data_version = content_version(files)
    manifest = {
        "asset": asset, "data_version": data_version, "code_version": code_version,
        "fingerprint": fingerprint, "config": dict(config), "upstream": dict(upstream),
        "run_id": run_id, "created_at": datetime.now(timezone.utc).isoformat(), "files": files,
        "rows": result.rows, "stats": result.stats,
        "writer": {"pid": os.getpid(), "host": socket.gethostname()},  # for repairs: is its maker alive?
        **(dict(extra) if extra else {}),
    }
    for f in files:  # immutable: read-only files
        p = staging / f["path"]
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return data_version, manifest


class ArtifactStore:
    """The store at a local home (this class) or at an ``s3://`` home (``ObjectArtifactStore``,
    chosen by the constructor from the home it is given)."""

    def __new__(cls, home: Path | str):
        if cls is ArtifactStore and is_url(home):
            return super().__new__(ObjectArtifactStore)
        return super().__new__(cls)

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
            data_version, manifest = stage_version(staging, asset, build, fingerprint=fingerprint,
                                                   code_version=code_version, config=config,
                                                   upstream=upstream, run_id=run_id, extra=extra)
            reused = self._publish(asset, data_version, staging, manifest)
            fault_point("store.after_publish")
        finally:
            if staging.exists():
                _rmtree(staging)
        self._write_index(asset, fingerprint, data_version)
        stored = self.get(asset, data_version)
        if not reused:
            self._verified.add((asset, data_version))  # just hashed by list_files
        return self._version(asset, data_version, stored.manifest, reused_content=reused)

    def _version(self, asset: str, data_version: str, manifest: dict[str, Any], **kw) -> StoredVersion:
        return StoredVersion(asset, data_version, self.version_dir(asset, data_version), manifest, **kw)

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


# ---- object storage (s3://bucket/prefix homes) ----------------------------------------------------

LEASES = "_leases"
LEASE_TTL_ENV = "LINEAGE_LEASE_TTL_S"
DEFAULT_LEASE_TTL_S = 6 * 3600.0


def lease_ttl_s() -> float:
    return float(os.environ.get(LEASE_TTL_ENV) or DEFAULT_LEASE_TTL_S)


class ObjectArtifactStore(ArtifactStore):
    """The artifact store on an S3-compatible object store (``s3://bucket/prefix`` home).

    Objects (keys under the home, the same layout as a local store)::

        artifacts/<asset>/<data_version>/<files>         uploaded first
        artifacts/<asset>/<data_version>/manifest.json   written last, create-only: the commit marker
        artifacts/<asset>/_fingerprints/<fp>.json        fingerprint -> data_version (one PUT)
        artifacts/_leases/<asset>~<version>~<pid>~<rand>~<host>.json   a writer uploading (host, pid,
                                                         start, TTL); deleted once the manifest is in
        artifacts/_corrupt/<asset>/<version>~<stamp>~<rand>/           quarantined copies

    There is no rename on object storage, so a version is published in place: a build runs in a
    local staging directory (scratch space), its files are uploaded under the final
    content-addressed prefix, and ``manifest.json`` is written last with ``If-None-Match: *``.
    Readers (``versions``, ``get``, ``has_version``, ``lookup``) only see prefixes with a manifest,
    so a writer killed at any moment leaves no visible version; two writers of the same content
    upload the same bytes to the same keys and the first manifest wins (the second reports
    ``reused_content``). Uploads of dead writers are found by their lease (``lineage gc``).

    ``StoredVersion.path`` is a local read copy under ``<scratch>/cache/``: downloaded on first
    use, checked against the manifest (size, sha256) before it is handed out, and renamed into
    place, so a damaged or partial copy is never read; a damaged copy is fetched again.
    """

    def __init__(self, home: str):
        from ml.storage import StorageUrl, scratch_dir

        self.home = StorageUrl(str(home))
        self.root = self.home / "artifacts"
        self._verified = set()
        self._fetched: dict[tuple[str, str], Path] = {}
        self.scratch = scratch_dir()
        self.cache_root = self.scratch / "cache" / digest_json(str(self.home), 12)

    @property
    def fs(self):
        from ml.storage import filesystem

        return filesystem()

    # ---- keys ------------------------------------------------------------------------------
    def asset_dir(self, asset: str):
        return self.root / check_asset_name(asset)

    def version_dir(self, asset: str, data_version: str):
        return self.asset_dir(asset) / check_hex(data_version, "data version")

    def _index_path(self, asset: str, fingerprint: str):
        return self.asset_dir(asset) / INDEX / f"{check_hex(fingerprint, 'fingerprint')}.json"

    # ---- reads -----------------------------------------------------------------------------
    def _version(self, asset: str, data_version: str, manifest: dict[str, Any], **kw) -> StoredVersion:
        return StoredVersion(asset, data_version, self.version_dir(asset, data_version), manifest,
                             fetch=lambda: self._materialize(asset, data_version, manifest), **kw)

    def has_version(self, asset: str, data_version: str) -> bool:
        return self.fs.exists((self.version_dir(asset, data_version) / MANIFEST).key)

    def get(self, asset: str, data_version: str) -> StoredVersion:
        url = self.version_dir(asset, data_version)
        try:
            raw = self.fs.cat_file((url / MANIFEST).key)
        except FileNotFoundError:
            raise FileNotFoundError(f"{asset}@{data_version} is not in the store at {self.root}") from None
        return self._version(asset, data_version, json.loads(raw))

    def assets(self) -> list[str]:
        from ml.storage import objects

        names = {self.root.relative(k).split("/", 1)[0] for k in objects(self.root)}
        return sorted(n for n in names if ASSET_NAME_RE.match(n))

    def versions(self, asset: str) -> list[StoredVersion]:
        from ml.storage import objects

        adir = self.asset_dir(asset)
        keys = [k for k in objects(adir) if k.count("/") - adir.key.count("/") == 2
                and k.endswith("/" + MANIFEST) and HEX_OK(k.rsplit("/", 2)[-2])]
        if not keys:
            return []
        found = [self._version(asset, k.rsplit("/", 2)[-2], json.loads(raw))
                 for k, raw in sorted(self.fs.cat(keys, on_error="omit").items())]
        return sorted(found, key=lambda v: (v.manifest.get("created_at", ""), v.data_version))

    def lookup(self, asset: str, fingerprint: str, verify: bool = True) -> StoredVersion | None:
        try:
            data_version = json.loads(self.fs.cat_file(self._index_path(asset, fingerprint).key))["data_version"]
            found = self.get(asset, data_version)
        except (FileNotFoundError, KeyError, ValueError):
            return None
        if verify:
            self.check(found)
        return self._version(asset, data_version, found.manifest, cache_hit=True)

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
            from ml.storage import download

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
        from ml.storage import objects

        vdir = self.version_dir(asset, data_version)
        sizes = {vdir.relative(k): info["size"] for k, info in objects(vdir).items()}
        return [f["path"] for f in manifest.get("files") or [] if sizes.get(f["path"]) != f["bytes"]]

    def quarantine(self, asset: str, data_version: str):
        """Copy the version's objects to ``_corrupt/<asset>/<version>~<stamp>~<rand>/``, then delete
        its manifest (from that moment it is no version), then the rest. Returns the new URL."""
        from ml.storage import objects

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
        from ml.storage import objects

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
        from ml.storage import write_bytes_atomic

        write_bytes_atomic(self._index_path(asset, fingerprint), json.dumps({"data_version": data_version}).encode())

    def _upload(self, asset: str, data_version: str, staging: Path, files: list[dict[str, Any]],
                manifest: dict[str, Any]) -> bool:
        """Lease, files, manifest (create-only), lease removed. False: another writer's manifest came first."""
        from ml.storage import create_only

        vdir = self.version_dir(asset, data_version)
        lease = self.root / LEASES / (f"{asset}~{data_version}~{os.getpid()}~{secrets.token_hex(4)}~"
                                      f"{socket.gethostname()}.json")
        self.fs.pipe_file(lease.key, json.dumps({
            "asset": asset, "data_version": data_version, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": datetime.now(timezone.utc).timestamp(), "ttl_s": lease_ttl_s()}).encode())
        listed = {f["path"] for f in files}
        others = [p.relative_to(staging).as_posix() for p in sorted(staging.rglob("*"))  # not in the manifest
                  if p.is_file() and p.name != MANIFEST and p.relative_to(staging).as_posix() not in listed]
        paths = [f["path"] for f in files if not is_run_fact(f["path"])] + others
        half = len(paths) // 2
        for i, part in enumerate((paths[:half], paths[half:])):
            if i == 1:
                fault_point("store.during_upload")
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
        created = create_only(vdir / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True, default=str)
                                                + "\n").encode())
        self.fs.rm_file(lease.key)
        return created

    def _new_staging(self, asset: str) -> Path:
        sdir = self.scratch / STAGING.lstrip("_")
        sdir.mkdir(parents=True, exist_ok=True)
        path = sdir / f"{asset}~{os.getpid()}~{secrets.token_hex(4)}~{socket.gethostname()}"
        path.mkdir()
        return path

    def collect_garbage(self) -> int:
        """Remove local staging directories (scratch) of processes on this host that no longer run."""
        sdir = self.scratch / STAGING.lstrip("_")
        if not sdir.is_dir():
            return 0
        host, removed = socket.gethostname(), 0
        for child in sdir.iterdir():
            parts = child.name.split("~", 3)
            if len(parts) == 4 and parts[3] == host and parts[1].isdigit() and not pid_alive(int(parts[1])):
                _rmtree(child)
                removed += 1
        return removed


def HEX_OK(name: str) -> bool:
    try:
        check_hex(name)
        return True
    except ValueError:
        return False
