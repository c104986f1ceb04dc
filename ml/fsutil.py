"""Small filesystem and hashing helpers shared by the store, catalog and ingest.

Everything that must survive a crash goes through ``atomic_write_bytes`` (write
to a temporary sibling, fsync, rename, fsync the directory), so a reader sees
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest_json(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files are readable like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under root (before a rename publishes it)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` (on this host) runs; an exited child not reaped yet (zombie) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


SOURCE_FILES: dict[str, dict[str, str]] = {}  # code version -> {source file: sha256 prefix} (source_digest)
_REPO = Path(__file__).resolve().parents[1]


def source_digest(*paths: str | os.PathLike, length: int = 12) -> str:
    """Digest of source files: a code version that changes whenever their text changes. The files
    and their own digests are remembered (``source_files``), so a changed code version can name them."""
    h = hashlib.sha256()
    files = {}
    for p in paths:
        p = Path(p)
        text = p.read_bytes()
        h.update(p.name.encode() + b"\0" + text + b"\0")
        rp = p.resolve()
        files[rp.relative_to(_REPO).as_posix() if rp.is_relative_to(_REPO) else p.name] = \
            hashlib.sha256(text).hexdigest()[:16]
    digest = h.hexdigest()[:length]
    SOURCE_FILES[digest] = files
    return digest


def source_files(code_version: str) -> dict[str, str]:
    """{source file: sha256 prefix} behind a code version made of one or more ``source_digest`` values
    (some assets concatenate two); {} for one this process never computed."""
    out: dict[str, str] = {}
    for digest, files in SOURCE_FILES.items():
        if digest and digest in (code_version or ""):
            out.update(files)
    return dict(sorted(out.items()))


@contextmanager
def scoped_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (``None``: unset) inside the block; each variable back as it was after."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
