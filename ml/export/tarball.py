"""The bundle tarball: a deterministic .tar.gz (same files, same bytes) and its safe extraction.

Packing: sorted regular-file members, mtime 0, uid/gid 0, mode 0644, no gzip name or time.
Extraction refuses absolute paths, ``..``, links, device files, duplicates and archives that
expand past ``MAX_EXTRACT_BYTES``; it never follows or overwrites anything.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from ml.export.bundle import BundleError, UnsafeBundleError

MAX_EXTRACT_BYTES = 64 << 30


def pack_tar(src_dir: Path, tar_path: Path) -> None:
    """Deterministic .tar.gz of the regular files under src_dir (relative, sorted, fixed metadata)."""
    src_dir = Path(src_dir)
    files = sorted(p.relative_to(src_dir).as_posix() for p in src_dir.rglob("*") if not p.is_dir())
    fd, tmp = tempfile.mkstemp(dir=Path(tar_path).parent, prefix=f".{Path(tar_path).name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
                    for rel in files:
                        path = src_dir / rel
                        if path.is_symlink() or not path.is_file():
                            raise BundleError(f"{path} is not a regular file")
                        ti = tarfile.TarInfo(rel)
                        ti.size = path.stat().st_size
                        ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0o644, 0, 0, "", ""
                        with open(path, "rb") as f:
                            tf.addfile(ti, f)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, tar_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_member_name(name: str) -> str:
    """A member name that stays inside the extraction directory, or UnsafeBundleError."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeBundleError(f"unsafe member name {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or PureWindowsPath(name).drive:
        raise UnsafeBundleError(f"member {name!r} has an absolute path")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise UnsafeBundleError(f"member {name!r} has a '..', '.' or empty path component")
    return name


def safe_extract(tar_path: Path, dest: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> list[str]:
    """Extract regular files only, each to a checked path under dest; returns the member names."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    names: list[str] = []
    total = 0
    try:
        tf = tarfile.open(tar_path, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{tar_path} is not a readable .tar.gz: {exc}") from exc
    with tf:
        try:
            for m in tf:
                check_member_name(m.name)
                if m.issym() or m.islnk():
                    raise UnsafeBundleError(f"member {m.name!r} is a link (to {m.linkname!r}); links are refused")
                if m.isdir():
                    continue
                if not m.isreg():
                    raise UnsafeBundleError(f"member {m.name!r} is not a regular file (device, fifo or other)")
                if m.name in names:
                    raise UnsafeBundleError(f"member {m.name!r} appears twice")
                total += m.size
                if total > max_bytes:
                    raise UnsafeBundleError(f"archive expands to more than {max_bytes} bytes")
                target = (root / m.name).resolve()
                if not target.is_relative_to(root):
                    raise UnsafeBundleError(f"member {m.name!r} resolves outside {root}")
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                with open(target, "xb") as out:  # never follows or overwrites anything
                    shutil.copyfileobj(src, out)
                os.chmod(target, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
                names.append(m.name)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:  # gzip.BadGzipFile is an OSError
            raise BundleError(f"cannot extract {tar_path}: {exc}") from exc
    return names
