"""Storage locations: a local path (the default) or an S3-compatible URL, ``s3://bucket/prefix``.

``location(...)`` gives a ``Path`` or a ``StorageUrl`` (a ``str`` that joins with ``/``); work that needs
POSIX files happens in local scratch space, never under an s3 home. Client, variables and scratch:
DESIGN.md, "Object-store homes".
"""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

SCHEME = "s3://"
_lock = threading.Lock()
_fs_cache: dict[tuple, Any] = {}
_options: dict[str, str] = {}


class StorageUrl(str):
    """``s3://bucket/prefix`` (no trailing slash). ``url / "a/b"`` joins; ``.key`` is ``bucket/prefix``
    (what the filesystem takes); ``.name`` is the last part."""

    def __new__(cls, value: str):
        value = str(value)
        if not value.startswith(SCHEME) or len(value) <= len(SCHEME):
            raise ValueError(f"not an s3 URL: {value!r}")
        return super().__new__(cls, value.rstrip("/"))

    def __truediv__(self, other: Any) -> "StorageUrl":
        part = str(other).strip("/")
        return StorageUrl(f"{self}/{part}") if part else self

    @property
    def key(self) -> str:
        return self[len(SCHEME):]

    @property
    def name(self) -> str:
        return self.rsplit("/", 1)[-1]

    @property
    def bucket(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def parent(self) -> "StorageUrl":
        head = self.key.rsplit("/", 1)[0] if "/" in self.key else self.key
        return StorageUrl(SCHEME + head)

    def relative(self, key: str) -> str:
        """The part of an object key (``bucket/prefix/...``, as the filesystem lists it) under this URL."""
        key = key[len(SCHEME):] if key.startswith(SCHEME) else key
        base = self.key + "/"
        if not key.startswith(base):
            raise ValueError(f"{key!r} is not under {self}")
        return key[len(base):]


def is_url(loc: Any) -> bool:
    return isinstance(loc, str) and loc.startswith(SCHEME)


def location(loc: str | os.PathLike) -> Path | StorageUrl:
    """A local path (expanded, absolute) or a ``StorageUrl``; other schemes are refused clearly."""
    text = os.fspath(loc)
    if text.startswith(SCHEME):
        return StorageUrl(text)
    if "://" in text:
        raise ValueError(f"unsupported storage location {text!r}: a local path or s3://bucket/prefix")
    return Path(text).expanduser().resolve()


def configure(endpoint_url: str = "", key: str = "", secret: str = "", region: str = "") -> None:
    """Object-store settings given by configuration (resources); they win over the AWS_* variables."""
    with _lock:
        for name, value in (("endpoint_url", endpoint_url), ("key", key), ("secret", secret), ("region", region)):
            if value:
                _options[name] = value
            else:
                _options.pop(name, None)


def settings() -> dict[str, str]:
    """Endpoint, credentials and region in force (configure() first, then the environment)."""
    env = os.environ
    return {
        "endpoint_url": _options.get("endpoint_url") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "",
        "key": _options.get("key") or env.get("AWS_ACCESS_KEY_ID") or "",
        "secret": _options.get("secret") or env.get("AWS_SECRET_ACCESS_KEY") or "",
        "region": _options.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
    }


def _config() -> tuple[dict[str, Any], dict[str, Any]]:
    """obstore S3 config and client options for the current settings."""
    s = settings()
    config: dict[str, Any] = {"region": s["region"]}
    if s["endpoint_url"]:
        config["endpoint"] = s["endpoint_url"]
    if s["key"]:
        config["access_key_id"], config["secret_access_key"] = s["key"], s["secret"]
    client = {"allow_http": s["endpoint_url"].startswith("http://")}
    return config, client


def _release() -> None:
    """Drop the clients before the interpreter finalizes: an obstore client still alive then (its
    Rust runtime tearing down after Python's) aborted about one process exit in four here."""
    import gc

    with _lock:
        _fs_cache.clear()
    gc.collect()
    import sys

    asyn = sys.modules.get("fsspec.asyn")  # then stop fsspec's IO loop thread (if one ran the filesystem)
    if asyn is None:
        return
    loop, thread = asyn.loop[0], asyn.iothread[0]
    if loop is not None and thread is not None and loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def filesystem():
    """obstore's fsspec filesystem for the current settings (one per process and settings: a forked
    worker makes its own)."""
    from obstore.fsspec import FsspecStore

    return _client(("fs",), lambda config, client: FsspecStore("s3", config=config, client_options=client,
                                                                skip_instance_cache=True))


def native_store(bucket: str):
    """obstore's native S3 store of one bucket (create-only PUTs, listings with modification times)."""
    from obstore.store import S3Store

    return _client(("store", bucket), lambda config, client: S3Store(bucket, config=config, client_options=client))


def _client(kind: tuple, make):
    """The cached client of this kind for this process and settings, made by ``make(config, client_options)``."""
    ident = (*kind, os.getpid(), tuple(sorted(settings().items())))
    with _lock:
        if not _fs_cache:
            atexit.register(_release)
        made = _fs_cache.get(ident)
        if made is None:
            config, client = _config()
            made = _fs_cache[ident] = make(config, client)
    return made


def scratch_dir() -> Path:
    """Local scratch space (``$LINEAGE_SCRATCH``, default ``<tmp>/lineage-scratch-<uid>``), created."""
    raw = os.environ.get("LINEAGE_SCRATCH") or os.path.join(tempfile.gettempdir(), f"lineage-scratch-{os.getuid()}")
    path = Path(raw).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def home_scratch(home, kind: str) -> Path:
    """``<scratch>/<kind>/<digest of home>``: this machine's local state of kind ``kind`` for an ``s3://``
    home (read copies, caches, work directories), not created."""
    from ml.fsutil import digest_json

    return scratch_dir() / kind / digest_json(str(home), 12)


def exists(loc: Path | StorageUrl) -> bool:
    return filesystem().exists(loc.key) if is_url(loc) else Path(loc).exists()


def read_bytes(loc: Path | StorageUrl) -> bytes:
    return filesystem().cat_file(loc.key) if is_url(loc) else Path(loc).read_bytes()


def write_bytes_atomic(loc: Path | StorageUrl, data: bytes) -> None:
    """One object PUT (atomic on S3: the object appears whole or not at all), or an atomic local write."""
    if is_url(loc):
        filesystem().pipe_file(loc.key, data)
    else:
        from ml.fsutil import atomic_write_bytes

        atomic_write_bytes(Path(loc), data)


def create_only(loc: StorageUrl, data: bytes) -> bool:
    """PUT ``data`` unless the object exists (``If-None-Match: *``). True: this call created it;
    False: it existed already (another writer came first)."""
    import obstore
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    bucket, _, key = loc.key.partition("/")
    try:
        obstore.put(native_store(bucket), key, data, mode="create")
        return True
    except (AlreadyExistsError, PreconditionError):
        return False


def _meta(bucket: str, meta: dict) -> tuple[str, dict]:
    return f"{bucket}/{meta['path']}", {"size": int(meta["size"]), "mtime": meta["last_modified"], "type": "file",
                                        "etag": meta.get("e_tag")}


def head(url: StorageUrl) -> dict | None:
    """``objects``' entry of one object (one HEAD), None when there is none."""
    import obstore

    bucket, _, name = url.key.partition("/")
    try:
        return _meta(bucket, obstore.head(native_store(bucket), name))[1]
    except FileNotFoundError:
        return None


def objects(url: StorageUrl) -> dict[str, dict]:
    """``bucket/key`` -> {size, mtime (datetime), type: file, etag} of every object under ``url``
    (recursively), from one fresh listing. {} when there is none."""
    import obstore

    bucket, _, prefix = url.key.partition("/")
    out = {}
    for batch in obstore.list(native_store(bucket), prefix + "/" if prefix else None):
        for meta in batch:
            key, entry = _meta(bucket, meta)
            out[key] = entry
    return out


def download(keys: list[str], paths: list[Path], concurrency: int = 32) -> None:
    """Fetch objects (``bucket/key``) to local files, ``concurrency`` at a time, each streamed in
    chunks (obstore's async get: 2x the fsspec path's throughput in bench/objstore.py). A missing
    object raises FileNotFoundError."""
    import asyncio

    import obstore

    async def run() -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(key: str, path: Path) -> None:
            bucket, _, name = key.partition("/")
            async with sem:
                resp = await obstore.get_async(native_store(bucket), name)
                with open(path, "wb") as f:
                    async for chunk in resp.stream(min_chunk_size=8 << 20):
                        f.write(chunk)

        await asyncio.gather(*(one(k, Path(p)) for k, p in zip(keys, paths)))

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread (the normal case): run one
        asyncio.run(run())
        return
    filesystem().get(list(keys), [str(p) for p in paths])  # inside a running loop: the blocking path
