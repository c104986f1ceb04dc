"""Where lineage-forge keeps its state (``LINEAGE_HOME``), the layout under it, and safe names inside it.

LINEAGE_HOME may be ``s3://bucket/prefix`` (ml/storage.py): the same layout as object keys. The layout:
DESIGN.md, "Storage".
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml.storage import StorageUrl

REPO_ROOT = Path(__file__).resolve().parents[1]

ASSET_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
HEX_RE = re.compile(r"^[0-9a-f]{16,64}$")


class UnsafeNameError(ValueError):
    """An asset name, version or relative path that could escape the store."""


def lineage_home(home: str | os.PathLike | None = None) -> "Path | StorageUrl":
    """Explicit argument, else $LINEAGE_HOME, else ``.lineage/`` in the checkout: a local path, or
    ``s3://bucket/prefix`` (a ``ml.storage.StorageUrl``: every part below joins with ``/`` alike)."""
    from ml.storage import location

    raw = home or os.environ.get("LINEAGE_HOME") or (REPO_ROOT / ".lineage")
    return location(raw)


def landing_dir(home: Path) -> Path:
    return home / "landing"


def artifacts_dir(home: Path) -> Path:
    return home / "artifacts"


def work_dir(home: Path) -> Path:
    return home / "work"


def catalog_dir(home: Path) -> Path:
    return home / "catalog"


def check_asset_name(name: str) -> str:
    if not isinstance(name, str) or not ASSET_NAME_RE.match(name):
        raise UnsafeNameError(f"invalid asset name {name!r}: expected [a-z][a-z0-9_]*, at most 64 chars")
    return name


def check_hex(value: str, what: str = "version") -> str:
    if not isinstance(value, str) or not HEX_RE.match(value):
        raise UnsafeNameError(f"invalid {what} {value!r}: expected 16-64 lowercase hex digits")
    return value


def safe_join(root: Path, relpath: str) -> Path:
    """root / relpath, refusing absolute paths, '..' and anything resolving outside root."""
    if not relpath or os.path.isabs(relpath) or "\\" in relpath:
        raise UnsafeNameError(f"unsafe relative path {relpath!r}")
    parts = Path(relpath).parts
    if any(p in ("..", "") for p in parts):
        raise UnsafeNameError(f"unsafe relative path {relpath!r}")
    candidate = (root / relpath).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise UnsafeNameError(f"path {relpath!r} escapes {root}")
    return candidate
