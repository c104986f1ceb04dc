"""raw_docs: validate landing-zone JSONL into documents + a quarantine with reasons.

Every input line ends in exactly one place: ``docs`` (kept) or ``quarantine`` with one reason
code (``REASONS``, each explained in ml/FORMATS.md "Quarantine reasons"), so
``lines_read == kept + quarantined`` always holds. A line is never read into memory past
``max_doc_bytes + 1`` bytes; longer lines are quarantined as ``too_large``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Iterator

import polars as pl

from ml.storage import is_url
from ml.fsutil import sha256_file  # noqa: F401  (ml/datasets/preference.py uses rd.sha256_file)

REQUIRED_FIELDS = ("title", "content", "url")
REASONS = (
    "blank_line", "invalid_utf8", "nul_byte", "too_large", "truncated_line", "invalid_json",
    "not_object", "missing_field", "wrong_type", "empty_content", "duplicate_doc",
    "truncated_file", "unreadable_file", "symlink", "not_regular_file",
)
DOC_SCHEMA = {
    "doc_id": pl.String, "title": pl.String, "content": pl.String, "url": pl.String,
    "source": pl.String, "line": pl.Int64, "meta": pl.String,
}
QUARANTINE_SCHEMA = {
    "source": pl.String, "line": pl.Int64, "reason": pl.String, "detail": pl.String, "excerpt": pl.String,
}
SKIP_CHUNK = 1 << 20
PART_BYTES = 64 << 20  # a Parquet part holds at most this many bytes of input lines (bounds memory)
ROW_GROUP_ROWS = 2048  # rows per Parquet row group: a reader can stream a part in row groups (curation does)
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class IngestConfig:
    max_doc_bytes: int = 2_000_000
    excerpt_chars: int = 160
    batch_rows: int = 50_000
    slice_bytes: int = 64 << 20  # a landing file larger than this is ingested in slices of about this size (0: never)


@dataclass(frozen=True)
class LandingFile:
    relpath: str
    path: Path
    size: int
    sha256: str  # a MARKERS value when the entry is accounted but not read
    problem: str | None = None  # its quarantine reason then (symlink, not_regular_file, unreadable_file)
    detail: str = ""
    # a slice of a large file (``slice_files``): its bytes [offset, offset + size) and the lines before it
    offset: int = 0
    first_line: int = 0
    sliced: bool = False


@dataclass
class IngestReport:
    files: int = 0
    bytes_read: int = 0
    lines_read: int = 0
    kept: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    per_source: dict[str, Counter] = field(default_factory=dict)
    bom_stripped: int = 0  # files that began with a UTF-8 byte order mark (removed before parsing)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": self.files, "bytes_read": self.bytes_read, "lines_read": self.lines_read,
            "kept": self.kept, "quarantined": self.quarantined, "bom_stripped": self.bom_stripped,
            "quarantine_rate": (self.quarantined / self.lines_read) if self.lines_read else 0.0,
        }
        for reason in REASONS:
            out[f"quarantine.{reason}"] = self.reasons.get(reason, 0)
        return out


LANDING_SUFFIXES = (".jsonl", ".jsonl.gz")
RESERVED_DIRS = ("preferences",)
"""Top-level landing directories that hold other inputs than documents, so raw_docs (and the
landing sensor's document listing) leave them out: ``preferences/`` is preference_dataset's
(ml/datasets/preference.py)."""


# markers that stand in for a sha256 where an entry is accounted but not read (upstream of raw_docs,
# and the landing sensor's digests, so both see the same landing state)
MARKERS = {"symlink": "symlink", "not_regular_file": "not_a_file", "unreadable_file": "unreadable"}


def _walk(landing: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(relpath, path, lstat) of every visible entry under ``landing``, sorted. Never follows a
    symbolic link (``os.walk`` with ``followlinks=False``; links are reported, not entered), so
    nothing outside the landing root is ever listed. Hidden names are left out."""
    landing = Path(landing)
    if not landing.is_dir():
        return
    out = []
    for dirpath, dirs, files in os.walk(landing, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(dirpath)
        for name in [*dirs, *files]:
            if name.startswith("."):
                continue
            path = base / name
            try:
                st = os.lstat(path)
            except FileNotFoundError:  # removed while listed
                continue
            out.append((path.relative_to(landing).as_posix(), path, st))
    yield from sorted(out, key=lambda t: t[0])


def visible_files(landing: Path) -> list[tuple[str, Path]]:
    """(relpath, path) of every regular file under ``landing`` (recursively), sorted by path.

    Hidden files and directories (temporary names of writers in progress) are left out, and so
    is anything behind a symbolic link: a link is never followed (``landing_problems`` lists it).
    An ``s3://`` landing zone lists its objects (``path`` is then an ``ml.storage.StorageUrl``)."""
    if is_url(landing):
        return [(rel, url) for rel, url, _ in _s3_objects(landing)]
    return [(rel, path) for rel, path, st in _walk(landing) if stat.S_ISREG(st.st_mode)]


def is_landing_file(relpath: str) -> bool:
    """Whether ``raw_docs`` reads this file of ``visible_files``: a *.jsonl or *.jsonl.gz outside
    the ``RESERVED_DIRS``."""
    return relpath.endswith(LANDING_SUFFIXES) and relpath.split("/", 1)[0] not in RESERVED_DIRS


def landing_problems(landing: Path) -> list[LandingFile]:
    """Entries raw_docs accounts for but never reads, each with its reason: every symbolic link
    outside the ``RESERVED_DIRS`` (``symlink``, whatever its name or target: it is not followed), and
    a directory or special file with a landing name (``not_regular_file``). On an ``s3://`` landing
    zone: object keys that are no safe relative path, and prefixes with a landing name."""
    if is_url(landing):
        return _s3_problems(landing)
    root = Path(landing).resolve() if Path(landing).is_dir() else Path(landing)
    out = []
    for rel, path, st in _walk(landing):
        if rel.split("/", 1)[0] in RESERVED_DIRS:
            continue
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
                inside = (path.parent / target).resolve().is_relative_to(root)
            except OSError:
                target, inside = "?", False
            where = "inside" if inside else "outside"
            out.append(LandingFile(rel, path, 0, MARKERS["symlink"], "symlink",
                                   f"symbolic link (target {where} the landing zone); links are never followed"))
        elif is_landing_file(rel) and not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (fifo, socket or device)"
            out.append(LandingFile(rel, path, 0, MARKERS["not_regular_file"], "not_regular_file",
                                   f"{kind} with a landing file name"))
    return out


def open_landing(path: Path) -> IO[bytes]:
    """Open a landing file for reading without following a symbolic link (O_NOFOLLOW: a file swapped
    for a link after the scan fails with ELOOP instead of reading the target)."""
    if is_url(path):  # an object: a streamed read (there are no links on an object store)
        from ml.storage import filesystem

        import io

        return io.BufferedReader(filesystem().open(path.key, "rb", block_size=1 << 22), buffer_size=1 << 20)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    return os.fdopen(fd, "rb")


def _sha256_nofollow(path: Path) -> str:
    h = hashlib.sha256()
    with open_landing(path) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _stat_key(st: os.stat_result) -> list[int]:
    """What says a file's bytes are unchanged without reading them: any write changes mtime or
    ctime (ctime cannot be set back), a replacement changes the inode."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def scan_cache(home) -> Path:
    """Where a scan remembers digests and slice cuts: ``<home>/work/raw_docs``; for an ``s3://``
    home, this machine's scratch space (a cache: each machine that plans fills its own)."""
    if is_url(home):
        from ml.storage import home_scratch

        return home_scratch(home, "raw_docs")
    from ml.paths import work_dir

    return work_dir(Path(home)) / "raw_docs"


def scan_landing(landing: Path, digests: Path | None = None) -> list[LandingFile]:
    """Every *.jsonl / *.jsonl.gz under ``landing`` (recursively, hidden ones left out: see
    ``visible_files``), sorted, with size and sha256; and the entries raw_docs accounts for without
    reading them (``landing_problems``, and files it cannot open: ``unreadable_file``), with the
    reason in ``problem`` and a marker instead of the sha256. An ``s3://`` landing zone follows the
    same rules over its objects (size from the listing, sha256 of the streamed bytes).

    ``digests``: a JSON file of the sha256s of an earlier scan by file (device, inode, size, mtime,
    ctime; an object's size, last-modified time and ETag); a file whose stat is the same is not read
    again (as git's index does), so a scan of an unchanged landing zone costs a stat per file (one
    listing on an object store), not a read of the corpus. Rewritten atomically."""
    known = _read_memo(digests)
    seen: dict = {}
    out = _s3_scan(landing, known, seen) if is_url(landing) else []
    for rel, path in ([] if is_url(landing) else visible_files(landing)):
        if not is_landing_file(rel):
            continue
        try:
            st = path.stat()
            entry = known.get(rel)
            if entry and entry[0] == _stat_key(st):
                sha = entry[1]
            else:
                sha = _sha256_nofollow(path)
                st2 = path.stat()  # written to while read: not remembered
                if _stat_key(st2) != _stat_key(st):
                    st = None
            if st is not None:
                seen[rel] = [_stat_key(st), sha]
            out.append(LandingFile(rel, path, path.stat().st_size, sha))
        except FileNotFoundError:  # removed while scanned
            continue
        except OSError as exc:  # PermissionError, or swapped for a link (ELOOP)
            out.append(LandingFile(rel, path, 0, MARKERS["unreadable_file"], "unreadable_file",
                                   f"{type(exc).__name__}: {exc.strerror or exc}"))
    out += _s3_problems(landing) if is_url(landing) else landing_problems(landing)
    _write_memo(digests, seen, known)
    return sorted(out, key=lambda f: f.relpath)


def _read_memo(path: Path | None) -> dict:
    """A scan's memory (digests, slice cuts): {} when there is none or it cannot be read."""
    if path is None:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _write_memo(path: Path | None, now: dict, before: dict) -> None:
    if path is not None and now != before:
        from ml.fsutil import atomic_write_json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(path), now)


# ---- landing zone on an object store (s3://bucket/prefix) ----------------------------------
def _s3_listing(landing) -> list[tuple[str, dict]]:
    """(relpath, info) of every object under the landing prefix, sorted (directory markers left out)."""
    from ml.storage import StorageUrl, objects

    landing = StorageUrl(landing)
    out = [(landing.relative(key), info) for key, info in objects(landing).items()]
    return sorted(((rel, info) for rel, info in out if rel and not rel.endswith("/")), key=lambda t: t[0])


def _unsafe_key(rel: str) -> bool:
    """An object key that is no safe relative path: an empty, '.' or '..' segment, a backslash, a control
    character, or bytes the client could not decode (listed with U+FFFD)."""
    return (any(part in ("", ".", "..") for part in rel.split("/")) or "\\" in rel
            or any(ord(c) < 32 or ord(c) == 127 or c == "\ufffd" for c in rel))  # U+FFFD: a key not decodable


def _s3_objects(landing) -> list[tuple[str, Any, dict]]:
    """(relpath, url, info) of the readable-named objects: safe keys, no hidden segment."""
    from ml.storage import StorageUrl

    landing = StorageUrl(landing)
    return [(rel, landing / rel, info) for rel, info in _s3_listing(landing)
            if not _unsafe_key(rel) and not any(part.startswith(".") for part in rel.split("/"))]


def _s3_problems(landing) -> list[LandingFile]:
    from ml.storage import StorageUrl

    landing = StorageUrl(landing)
    out, prefixes = [], set()
    for rel, info in _s3_listing(landing):
        if rel.split("/", 1)[0] in RESERVED_DIRS:
            continue
        if _unsafe_key(rel):
            out.append(LandingFile(rel, landing / rel, 0, MARKERS["unreadable_file"], "unreadable_file",
                                   "object key is no safe relative path ('', '.' or '..' segment, backslash "
                                   "or control character); never read"))
            continue
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts):
            continue
        for i in range(1, len(parts)):  # a "directory" (prefix) with a landing file name
            prefix = "/".join(parts[:i])
            if is_landing_file(prefix) and prefix not in prefixes:
                prefixes.add(prefix)
                out.append(LandingFile(prefix, landing / prefix, 0, MARKERS["not_regular_file"], "not_regular_file",
                                       "a prefix (directory) with a landing file name"))
    return sorted(out, key=lambda f: f.relpath)


def _object_key(info: dict) -> list:
    """What says an object's bytes are unchanged without reading them: every PUT gives a new
    last-modified time, and other bytes another ETag."""
    m = info.get("mtime")
    return [int(info["size"]), m.isoformat() if m else None, info.get("etag")]


def _s3_scan(landing, known: dict, seen: dict) -> list[LandingFile]:
    """``scan_landing`` of an object prefix: an object whose listing (size, last-modified, ETag) is
    the one ``known`` remembers is not read again; ``seen`` gets the entries to remember."""
    from ml.storage import StorageUrl, head

    landing = StorageUrl(landing)
    out = []
    for rel, url, info in _s3_objects(landing):
        if not is_landing_file(rel):
            continue
        key = _object_key(info)
        entry = known.get(rel)
        if entry and entry[0] == key:
            seen[rel] = entry
            out.append(LandingFile(rel, url, key[0], entry[1]))
            continue
        try:
            h, n = hashlib.sha256(), 0
            with open_landing(url) as f:
                while block := f.read(1 << 20):
                    h.update(block)
                    n += len(block)
            out.append(LandingFile(rel, url, n, h.hexdigest()))
            after = head(url)  # replaced while read (ranged GETs): not remembered
            if after is not None and _object_key(after) == key and n == key[0]:
                seen[rel] = [key, out[-1].sha256]
        except FileNotFoundError:  # removed while scanned
            continue
        except Exception as exc:  # access denied (obstore's PermissionDeniedError), any refusal to read it
            out.append(LandingFile(rel, url, 0, MARKERS["unreadable_file"], "unreadable_file",
                                   f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"))
    return out


def stat_landing(path) -> os.stat_result | Any:
    """``st_size`` and ``st_mtime_ns`` of a landing entry listed by ``visible_files`` (a local file's
    ``os.stat``; an object's size and last-modified time). FileNotFoundError once it is gone."""
    if not is_url(path):
        return Path(path).stat()
    from types import SimpleNamespace

    from ml.storage import head

    info = head(path)
    if info is None:
        raise FileNotFoundError(str(path))
    m = info["mtime"]
    return SimpleNamespace(st_size=info["size"], st_mtime_ns=int(m.timestamp() * 1e9) if m else 0)


# ---- identity ------------------------------------------------------------------------------
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//[^/?#]*)?([^?#]*)(\?[^#]*)?(#.*)?$", re.S)


def normalize_url(url: str) -> str:
    """Lower-case scheme and host, no trailing slash on the path; query and fragment kept.

    The fragment is kept: on a page of many documents (docs.python.org/...#name) it is
    the identity. (A regex rather than urllib.parse.urlsplit: 10x faster per line.)
    """
    url = url.strip()
    m = _URL_RE.match(url)
    if not m:
        return url
    scheme, netloc, path, query, fragment = m.groups()
    path = path.rstrip("/")
    return f"{scheme.lower()}:{(netloc or '').lower()}{path}{query or ''}{fragment or ''}"


def normalize_content(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def doc_id_for(url: str, content: str) -> str:
    """Stable id: digest of normalized url + normalized content (title deliberately excluded)."""
    key = normalize_url(url) + "\x1f" + normalize_content(content)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


# ---- reading -------------------------------------------------------------------------------
@dataclass
class RawLine:
    number: int
    data: bytes  # at most max_doc_bytes + 1 bytes (the head, when too large)
    size: int  # full size in bytes, newline excluded
    newline: bool  # False for a final line without "\n"
    too_large: bool


class FileTruncated(Exception):
    def __init__(self, line: int, detail: str):
        super().__init__(detail)
        self.line, self.detail = line, detail


def iter_lines(stream: IO[bytes], max_bytes: int) -> Iterator[RawLine]:
    """Lines of a binary stream, never holding more than max_bytes + 1 bytes of one line."""
    number = 0
    limit = max_bytes + 1
    while True:
        number += 1
        try:
            chunk = stream.readline(limit)
            if not chunk:
                return
            if chunk.endswith(b"\n"):
                yield RawLine(number, chunk[:-1], len(chunk) - 1, True, len(chunk) - 1 > max_bytes)
                continue
            if len(chunk) < limit:  # end of stream without a newline
                yield RawLine(number, chunk, len(chunk), False, len(chunk) > max_bytes)
                return
            size, newline = len(chunk), False
            while rest := stream.readline(SKIP_CHUNK):  # skip the remainder of an oversized line
                if rest.endswith(b"\n"):
                    size += len(rest) - 1
                    newline = True
                    break
                size += len(rest)
            yield RawLine(number, chunk, size, newline, True)
            if not newline:
                return
        except gzip.BadGzipFile:
            if number == 1:
                raise  # not gzip at all: unreadable_file
            raise FileTruncated(number, "corrupt gzip stream") from None
        except (EOFError, zlib.error) as exc:
            raise FileTruncated(number, f"{type(exc).__name__}: {exc}") from exc


def _forbid_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_forbid_constant)
# JSON escapes that decode to NUL or to a UTF-16 surrogate; only lines holding one are walked
_NUL_ESCAPE = b"\\u0000"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has(obj: Any, pred) -> bool:
    if isinstance(obj, str):
        return pred(obj)
    if isinstance(obj, dict):
        return any(_has(k, pred) or _has(v, pred) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has(v, pred) for v in obj)
    return False


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def excerpt(data: bytes, n: int) -> str:
    text = data[: n * 4].decode("utf-8", errors="replace")[:n]
    return text.replace("\x00", "\\0")


def classify(raw: RawLine, required: tuple[str, ...] = REQUIRED_FIELDS,
             non_empty: tuple[str, ...] = ("content",)) -> tuple[dict | None, str | None, str]:
    """(document, None, "") for a good line, or (None, reason, detail) for a rejected one.

    ``required`` string fields and the ``non_empty`` ones among them: raw_docs' by default; other
    line-oriented inputs of the landing zone (ml/datasets/preference.py) pass their own."""
    if raw.too_large:
        return None, "too_large", f"{raw.size} bytes > limit"
    if not raw.data.strip():
        return None, "blank_line", ""
    if b"\x00" in raw.data:
        return None, "nul_byte", "NUL byte at offset %d" % raw.data.index(b"\x00")
    try:
        text = raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, "invalid_utf8", str(exc)
    text = text.removesuffix("\r")
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        # the parser ran out of input: at the end, or inside a string that never closes
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            return None, "truncated_line", f"JSON ends early: {exc.msg}"
        return None, "invalid_json", f"{exc.msg} at column {exc.colno}"
    except (ValueError, RecursionError) as exc:
        return None, "invalid_json", str(exc)
    if not isinstance(obj, dict):
        return None, "not_object", f"top-level {type(obj).__name__}"
    missing = [f for f in required if f not in obj]
    if missing:
        return None, "missing_field", "missing " + ", ".join(missing)
    wrong = [f"{f} is {type(obj[f]).__name__}" for f in required if not isinstance(obj[f], str)]
    if wrong:
        return None, "wrong_type", "; ".join(wrong)
    if _NUL_ESCAPE in raw.data and _has(obj, lambda s: "\x00" in s):
        return None, "nul_byte", "\\u0000 escape in a string"
    if _SURROGATE_ESCAPE.search(raw.data) and _has(obj, _has_surrogate):
        return None, "invalid_utf8", "lone surrogate escape in a string"
    empty = [f for f in non_empty if not obj[f].strip()]
    if empty:
        return None, "empty_content", "" if empty == ["content"] else ", ".join(empty) + " empty"
    return obj, None, ""


# ---- writing -------------------------------------------------------------------------------
class PartWriter:
    """Buffers rows and writes Parquet parts of at most ``batch_rows`` rows or ``max_bytes`` bytes
    of text: bounded memory, deterministic bytes. Parts are ``<prefix>part-NNNNN.parquet``."""

    def __init__(self, directory: Path, schema: dict[str, pl.DataType], batch_rows: int,
                 max_bytes: int = PART_BYTES, prefix: str = ""):
        self.directory, self.schema, self.batch_rows = directory, schema, batch_rows
        self.max_bytes, self.prefix = max_bytes, prefix
        self.rows: list[tuple] = []
        self.bytes = 0
        self.parts = 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, row: tuple, nbytes: int = 0) -> None:
        self.rows.append(row)
        self.bytes += nbytes
        if len(self.rows) >= self.batch_rows or self.bytes >= self.max_bytes:
            self.flush()

    def flush(self, force: bool = False) -> None:
        if not self.rows and not (force and self.parts == 0):
            return
        df = pl.DataFrame(self.rows, schema=self.schema, orient="row")
        df.write_parquet(self.directory / f"{self.prefix}part-{self.parts:05d}.parquet", compression="zstd",
                         statistics=True, row_group_size=ROW_GROUP_ROWS)
        self.parts += 1
        self.rows, self.bytes = [], 0


# ---- units: one landing file each ----------------------------------------------------------------
# ``ingest_file`` validates one file (its unit): docs/part-*.parquet, quarantine/part-*.parquet and
# ids.parquet (doc_id, line, excerpt of every kept document: what a later cross-file duplicate check
# needs). ``assemble`` puts units together in landing order and quarantines a document whose doc_id
# an earlier file already holds, exactly as one pass over all files would.
IDS_SCHEMA = {"doc_id": pl.String, "line": pl.Int64, "excerpt": pl.String}
_DUP_DETAIL = re.compile(r"^duplicate of ([0-9a-f]+) \(")


class _Window:
    """``readline`` over the next ``size`` bytes of a stream (a slice of a landing file)."""

    def __init__(self, stream: IO[bytes], size: int):
        self.stream, self.left = stream, size

    def readline(self, limit: int = -1) -> bytes:
        n = self.left if limit is None or limit < 0 else min(limit, self.left)
        data = self.stream.readline(n) if n > 0 else b""
        self.left -= len(data)
        return data


def _slice_cuts(lf: LandingFile, slice_bytes: int) -> list[list[int]]:
    """[[offset, lines before it], ...] of a file's slices, then [size, lines]: one sequential read."""
    cuts, lines_at = [0], [0]
    lines, pos, want = 0, 0, slice_bytes
    with open_landing(lf.path) as f:
        while block := f.read(1 << 20):
            while want < pos + len(block):  # the cut: just after the first newline at or after `want`
                nl = block.find(b"\n", want - pos)
                if nl < 0:
                    break
                cuts.append(pos + nl + 1)
                lines_at.append(lines + block.count(b"\n", 0, nl + 1))
                want = cuts[-1] + slice_bytes
            lines += block.count(b"\n")
            pos += len(block)
            want = max(want, pos)  # no newline after `want` in this block: look on in the next one
    if cuts[-1] >= pos:
        cuts.pop(), lines_at.pop()
    return [[c, n] for c, n in zip(cuts, lines_at)] + [[pos, lines]]


def slice_files(files: list[LandingFile], slice_bytes: int, cache: Path | None = None) -> list[LandingFile]:
    """Each uncompressed landing file larger than ``slice_bytes`` as consecutive slices of about
    that size, cut after a newline (the first newline at or after each multiple of ``slice_bytes``),
    each with the number of lines before it, so a slice's lines keep the numbers they have in the
    file. A slice is a unit of its own: (relpath, file sha256, offset, size) name it. Other
    entries are returned as they are. ``cache``: a JSON file of the cuts by (sha256, slice_bytes),
    so an unchanged large file is not read again to find them (rewritten atomically)."""
    if slice_bytes <= 0:
        return list(files)
    known = _read_memo(cache)
    used: dict = {}
    out = []
    for lf in files:
        if lf.problem or lf.relpath.endswith(".gz") or lf.size <= slice_bytes:
            out.append(lf)
            continue
        key = f"{lf.sha256}:{slice_bytes}"
        cuts = used[key] = known.get(key) or _slice_cuts(lf, slice_bytes)
        for (start, lines_before), (end, _) in zip(cuts, cuts[1:]):
            out.append(replace(lf, size=end - start, offset=start, first_line=lines_before, sliced=True))
    _write_memo(cache, used, known)
    return out


def ingest_file(lf: LandingFile, out: Path, cfg: IngestConfig = IngestConfig()) -> dict[str, Any]:
    """Validate every line of one landing file into ``out``; returns its counts (``lines_read``,
    ``kept``, ``quarantined``, ``bom_stripped``, ``reasons`` {reason: n}); duplicates are checked
    within the file only (``assemble`` checks across files)."""
    docs = PartWriter(out / "docs", DOC_SCHEMA, cfg.batch_rows)
    quarantine = PartWriter(out / "quarantine", QUARANTINE_SCHEMA, cfg.batch_rows)
    ids: list[tuple] = []
    counts: Counter = Counter()
    seen: dict[str, int] = {}
    bom = 0

    def reject(line: int, reason: str, detail: str, data: bytes) -> None:
        quarantine.add((lf.relpath, line, reason, detail, excerpt(data, cfg.excerpt_chars)), len(data))
        counts[reason] += 1

    lines = 0
    if lf.problem:  # accounted, never read: a link, a directory, a file we cannot open
        lines = 1
        reject(0, lf.problem, lf.detail, b"")
    else:
        try:
            with open_landing(lf.path) as raw_stream, (
                    gzip.GzipFile(fileobj=raw_stream, mode="rb") if lf.relpath.endswith(".gz") else raw_stream) as stream:
                if lf.sliced:
                    stream.seek(lf.offset)
                for raw in iter_lines(_Window(stream, lf.size) if lf.sliced else stream, cfg.max_doc_bytes):
                    lines += 1
                    raw.number += lf.first_line
                    if raw.number == 1 and raw.data.startswith(BOM):  # a BOM is no part of the first document
                        raw.data, raw.size = raw.data[len(BOM):], raw.size - len(BOM)
                        bom += 1
                    doc, reason, detail = classify(raw)
                    if reason:
                        reject(raw.number, reason, detail, raw.data)
                        continue
                    doc_id = doc_id_for(doc["url"], doc["content"])
                    if doc_id in seen:
                        reject(raw.number, "duplicate_doc", f"duplicate of {doc_id} ({lf.relpath}:{seen[doc_id]})",
                               raw.data)
                        continue
                    seen[doc_id] = raw.number
                    extra = {k: v for k, v in doc.items() if k not in REQUIRED_FIELDS}
                    meta = json.dumps(extra, sort_keys=True, ensure_ascii=False) if extra else None
                    docs.add((doc_id, doc["title"], doc["content"], doc["url"], lf.relpath, raw.number, meta),
                             len(raw.data))
                    ids.append((doc_id, raw.number, excerpt(raw.data, cfg.excerpt_chars)))
                    counts["kept"] += 1
        except FileTruncated as exc:
            lines += 1  # the line in flight when the stream broke
            reject(exc.line, "truncated_file", exc.detail, b"")
        except OSError as exc:  # unreadable from the first byte (e.g. not gzip at all)
            lines += 1
            reject(0, "unreadable_file", f"{type(exc).__name__}: {exc}", b"")
    docs.flush(force=True)
    quarantine.flush(force=True)
    pl.DataFrame(ids, schema=IDS_SCHEMA, orient="row").write_parquet(out / "ids.parquet")
    kept = counts.pop("kept", 0)
    return {"lines_read": lines, "kept": kept, "quarantined": sum(counts.values()), "bom_stripped": bom,
            "bytes": lf.size, "reasons": dict(sorted(counts.items()))}


def assemble(files: list[LandingFile], units: list[Path], unit_stats: list[dict[str, Any]], out_dir: Path,
             link=None) -> IngestReport:
    """raw_docs' version files from its units, in landing order: ``docs/u<i>-part-*.parquet`` and
    ``quarantine/u<i>-part-*.parquet`` (hard links of the unit's parts where no document of the unit
    duplicates one of an earlier file; rewritten without them otherwise)."""
    from ml.cleaned_chunks.pipeline import place_file

    link = link or place_file
    report = IngestReport()
    # doc_id -> (source, line) of its first kept line: Arrow columns, not a Python object per document
    seen = pl.DataFrame(schema={"doc_id": pl.String, "src": pl.String, "first_line": pl.Int64})
    (out_dir / "docs").mkdir(parents=True, exist_ok=True)
    (out_dir / "quarantine").mkdir(parents=True, exist_ok=True)
    for i, (lf, unit, st) in enumerate(zip(files, units, unit_stats)):
        prefix = f"u{i:05d}-"
        report.files += not (lf.sliced and lf.offset)  # a file's later slices are the same file
        report.bytes_read += lf.size
        report.lines_read += st["lines_read"]
        report.bom_stripped += st["bom_stripped"]
        counts = report.per_source.setdefault(lf.relpath, Counter())
        counts.update(st["reasons"])
        ids = pl.read_parquet(unit / "ids.parquet")
        hit = ids.join(seen, on="doc_id", how="left", maintain_order="left")
        dup = hit["src"].is_not_null()
        seen = pl.concat([seen, ids.filter(~dup).select("doc_id", src=pl.lit(lf.relpath, pl.String),
                                                        first_line=pl.col("line"))])
        if not dup.any():
            for sub in ("docs", "quarantine"):
                for part in sorted((unit / sub).glob("part-*.parquet")):
                    link(part, out_dir / sub / f"{prefix}{part.name}")
            kept, extra = st["kept"], Counter()
        else:  # rare: rewrite this unit without the documents an earlier file holds
            dups = ids.filter(dup)
            first = {d: (src, line) for d, src, line in hit.filter(dup).select("doc_id", "src", "first_line").iter_rows()}
            docs = pl.read_parquet(unit / "docs" / "*.parquet").filter(~pl.col("doc_id").is_in(list(first)))
            q = pl.read_parquet(unit / "quarantine" / "*.parquet")

            def redirect(detail: str) -> str:  # a duplicate of a duplicate: point at the earlier file
                m = _DUP_DETAIL.match(detail or "")
                if m and m.group(1) in first:
                    src, line = first[m.group(1)]
                    return f"duplicate of {m.group(1)} ({src}:{line})"
                return detail

            q = q.with_columns(detail=pl.col("detail").map_elements(redirect, return_dtype=pl.String))
            new_q = pl.DataFrame({
                "source": lf.relpath, "line": dups["line"], "reason": "duplicate_doc",
                "detail": [f"duplicate of {d} ({first[d][0]}:{first[d][1]})" for d in dups["doc_id"].to_list()],
                "excerpt": dups["excerpt"]}, schema=QUARANTINE_SCHEMA)
            q = pl.concat([q, new_q]).sort("line", maintain_order=True)
            w = PartWriter(out_dir / "docs", DOC_SCHEMA, 1 << 62, prefix=prefix)
            w.rows = list(docs.iter_rows())
            w.flush(force=True)
            w = PartWriter(out_dir / "quarantine", QUARANTINE_SCHEMA, 1 << 62, prefix=prefix)
            w.rows = list(q.iter_rows())
            w.flush(force=True)
            kept, extra = st["kept"] - dups.height, Counter(duplicate_doc=dups.height)
        counts.update(extra)
        if kept:
            counts["kept"] += kept
        report.kept += kept
        report.quarantined += st["quarantined"] + sum(extra.values())
        report.reasons.update(st["reasons"])
        report.reasons.update(extra)
    assert report.lines_read == report.kept + report.quarantined, "accounting identity broken"
    return report


def ingest(files: list[LandingFile], out_dir: Path, cfg: IngestConfig = IngestConfig()) -> IngestReport:
    """Validate every line of every file into out_dir/docs and out_dir/quarantine: each file as a
    unit (``ingest_file``) in a temporary directory, then ``assemble`` (copies)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="raw_docs-units-") as tmp:
        units, stats = [], []
        for i, lf in enumerate(files):
            units.append(Path(tmp) / f"{i:05d}")
            stats.append(ingest_file(lf, units[-1], cfg))
        report = assemble(files, units, stats, out_dir, shutil.copyfile)
    for sub in ("docs", "quarantine"):  # no file at all: still one (empty) part
        if not any((out_dir / sub).glob("*.parquet")):
            PartWriter(out_dir / sub, DOC_SCHEMA if sub == "docs" else QUARANTINE_SCHEMA, 1).flush(force=True)
    return report


def read_docs(version_dir: Path) -> pl.LazyFrame:
    return pl.scan_parquet(version_dir / "docs" / "*.parquet")


def read_quarantine(version_dir: Path) -> pl.LazyFrame:
    return pl.scan_parquet(version_dir / "quarantine" / "*.parquet")
