"""What a stored version is (manifest, content version, integrity check) and the part of the artifact
store that both stores share: ``put`` (stage, publish, index last), ``lookup``, ``open``, staging names.

The data version is the digest of the content files' paths and sha256s (the run record ``_run/``
listed and verified, but left out), so equal content is one version whatever made it. Use the store
through ml/store.py, which registers both kinds (``ArtifactStore(home)`` picks one from the home).
"""

from __future__ import annotations

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
from ml.fsutil import digest_json, pid_alive, sha256_file
from ml.paths import check_asset_name, check_hex, safe_join
from ml.storage import is_url
from ml.run_record import is_run_fact

MANIFEST = "manifest.json"
VERSION_LEN = 16
FINGERPRINT_LEN = 16
STAGING = "_staging"  # local: artifacts/_staging/; object store: <scratch>/staging/
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
    """The store at ``home``: ``ArtifactStore(home)`` is the registered kind that ``serves`` it (ml/store.py:
    ``LocalArtifactStore`` for a directory, ``ObjectArtifactStore`` for an ``s3://`` URL). Each supplies where things are (``asset_dir``,
    ``version_dir``, ``staging_root``), its reads, ``check``, ``quarantine`` and ``_publish``;
    ``put``, ``lookup``, ``open`` and the staging directories are the same for both."""

    root: Any  # artifacts/ of the home: a Path or a StorageUrl
    _verified: set[tuple[str, str]]  # versions checked by this instance (one step, one command)

    _kinds: list[type[ArtifactStore]] = []  # every store kind, registered by subclassing

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        ArtifactStore._kinds.append(cls)

    def __new__(cls, home: Path | str):
        if cls is ArtifactStore:
            kinds = [kind for kind in ArtifactStore._kinds if kind.serves(home)]
            if not kinds:
                raise RuntimeError(f"no artifact store kind serves {home!r}: import ArtifactStore from ml.store")
            cls = kinds[0]
        return super().__new__(cls)

    # ---- what each store supplies ------------------------------------------------------------
    @classmethod
    def serves(cls, home: Path | str) -> bool:
        """Whether this kind of store is the one for ``home``."""
        raise NotImplementedError

    def asset_dir(self, asset: str):
        raise NotImplementedError

    def version_dir(self, asset: str, data_version: str):
        raise NotImplementedError

    @property
    def staging_root(self) -> Path:
        """The local directory that holds this store's staging directories."""
        raise NotImplementedError

    def _read(self, location) -> bytes:
        """The bytes of one stored file (a manifest or an index entry); FileNotFoundError if none."""
        raise NotImplementedError

    def _version(self, asset: str, data_version: str, manifest: dict[str, Any], **kw) -> StoredVersion:
        raise NotImplementedError

    def _publish(self, asset: str, data_version: str, staging: Path, manifest: dict[str, Any]) -> bool:
        """Make the staged version visible. True: the version existed already (content reused)."""
        raise NotImplementedError

    def _write_index(self, asset: str, fingerprint: str, data_version: str) -> None:
        raise NotImplementedError

    def check(self, version: StoredVersion) -> StoredVersion:
        """``version`` once verified (per instance), else ``CorruptVersionError``."""
        raise NotImplementedError

    # ---- reads -------------------------------------------------------------------------------
    def _index_path(self, asset: str, fingerprint: str):
        return self.asset_dir(asset) / INDEX / f"{check_hex(fingerprint, 'fingerprint')}.json"

    def get(self, asset: str, data_version: str) -> StoredVersion:
        try:
            raw = self._read(self.version_dir(asset, data_version) / MANIFEST)
        except FileNotFoundError:
            raise FileNotFoundError(f"{asset}@{data_version} is not in the store at {self.root}") from None
        return self._version(asset, data_version, json.loads(raw))

    def lookup(self, asset: str, fingerprint: str, verify: bool = True) -> StoredVersion | None:
        """The version already made for this fingerprint, if it is still in the store; verified
        against its manifest (``CorruptVersionError``) unless ``verify=False``."""
        index = self._index_path(asset, fingerprint)  # an unsafe name raises, it is no miss
        try:
            data_version = json.loads(self._read(index))["data_version"]
            found = self.get(asset, data_version)
        except (FileNotFoundError, KeyError, ValueError):
            return None
        if verify:
            self.check(found)
        return self._version(asset, data_version, found.manifest, cache_hit=True)

    def open(self, asset: str, data_version: str) -> StoredVersion:
        """``get`` + ``check``: the version a step is about to read, verified against its manifest."""
        return self.check(self.get(asset, data_version))

    # ---- writes ------------------------------------------------------------------------------
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

    def _new_staging(self, asset: str) -> Path:
        """A fresh staging directory named ``<asset>~<pid>~<rand>~<host>`` (gc tells a dead writer's by it)."""
        sdir = self.staging_root
        sdir.mkdir(parents=True, exist_ok=True)
        path = sdir / f"{asset}~{os.getpid()}~{secrets.token_hex(4)}~{socket.gethostname()}"
        path.mkdir()
        return path

    def collect_garbage(self) -> int:
        """Remove staging directories left by processes on this host that no longer run."""
        sdir = self.staging_root
        if not sdir.is_dir():
            return 0
        host, removed = socket.gethostname(), 0
        for child in sdir.iterdir():
            parts = child.name.split("~", 3)
            if len(parts) == 4 and parts[3] == host and parts[1].isdigit() and not pid_alive(int(parts[1])):
                _rmtree(child)
                removed += 1
        return removed


def _rmtree(path: Path) -> None:
    def onerror(func, p, _exc):  # read-only files inside a read-only dir
        os.chmod(p, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
        func(p)

    shutil.rmtree(path, onerror=onerror)


def hex_ok(name: str) -> bool:
    """Whether ``name`` is a data version (or fingerprint) spelling."""
    try:
        check_hex(name)
        return True
    except ValueError:
        return False
