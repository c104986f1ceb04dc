"""Which object-store client for s3:// homes: s3fs (fsspec) vs obstore vs pyarrow.fs.S3FileSystem,
measured against a real SeaweedFS S3 gateway started here (tests/servers.py), side by side.

    python bench/objstore.py                      # 200 small files (4 kB) + one 8 MB file, 3 rounds
    python bench/objstore.py --small 500 --big-mb 32 --rounds 5

The "version" is what the store moves: many small files (Parquet parts, JSON) and a few MB-sized
ones (weights). Per library and round, into a fresh prefix: put (upload every file), list (one
recursive listing of the prefix), get (download every file into a temp dir, bytes checked). Each
library is used the way it is meant to be used concurrently: s3fs's batched put/get (asyncio),
obstore's async put/get gathered (and obstore through its fsspec filesystem, batched put/get: the
interface ml/storage.py uses), pyarrow's ``copy_files`` with threads. Prints the median seconds,
MB/s and files/s, and every figure as a ratio to s3fs measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_version(root: Path, small: int, big_mb: int) -> list[Path]:
    rng = os.urandom
    files = []
    for i in range(small):
        p = root / "parts" / f"part-{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng(4096))
        files.append(p)
    big = root / "model" / "model.safetensors"
    big.parent.mkdir(parents=True, exist_ok=True)
    big.write_bytes(rng(big_mb << 20))
    files.append(big)
    return files


class S3fs:
    name = "s3fs"

    def __init__(self, server):
        import s3fs

        self.fs = s3fs.S3FileSystem(key=server.access_key, secret=server.secret_key, skip_instance_cache=True,
                                    endpoint_url=server.endpoint, client_kwargs={"region_name": server.region})
        self.bucket = server.bucket

    def put(self, src: Path, files: list[Path], prefix: str) -> None:
        self.fs.put([str(f) for f in files], [f"{self.bucket}/{prefix}/{f.relative_to(src).as_posix()}" for f in files])

    def list(self, prefix: str) -> int:
        self.fs.invalidate_cache()
        return len(self.fs.find(f"{self.bucket}/{prefix}"))

    def get(self, rels: list[str], prefix: str, dest: Path) -> None:
        for r in rels:
            (dest / r).parent.mkdir(parents=True, exist_ok=True)
        self.fs.get([f"{self.bucket}/{prefix}/{r}" for r in rels], [str(dest / r) for r in rels])


class Obstore:
    name = "obstore"

    def __init__(self, server):
        import obstore as obs
        from obstore.store import S3Store

        self.obs = obs
        self.store = S3Store(server.bucket, endpoint=server.endpoint, access_key_id=server.access_key,
                             secret_access_key=server.secret_key, region=server.region,
                             client_options={"allow_http": True})

    def put(self, src: Path, files: list[Path], prefix: str) -> None:
        async def run():
            sem = asyncio.Semaphore(32)

            async def one(f):
                async with sem:
                    await self.obs.put_async(self.store, f"{prefix}/{f.relative_to(src).as_posix()}", f)

            await asyncio.gather(*(one(f) for f in files))

        asyncio.run(run())

    def list(self, prefix: str) -> int:
        return sum(len(batch) for batch in self.obs.list(self.store, prefix + "/"))

    def get(self, rels: list[str], prefix: str, dest: Path) -> None:
        async def run():
            sem = asyncio.Semaphore(32)

            async def one(r):
                async with sem:
                    got = await self.obs.get_async(self.store, f"{prefix}/{r}")
                    data = await got.bytes_async()
                (dest / r).parent.mkdir(parents=True, exist_ok=True)
                (dest / r).write_bytes(bytes(data))

            await asyncio.gather(*(one(r) for r in rels))

        asyncio.run(run())


class ObstoreFsspec(S3fs):
    """obstore through its fsspec filesystem, batched put/get: what ml/storage.py uses."""

    name = "obstore.fsspec"

    def __init__(self, server):
        self.fs = server.client()
        self.bucket = server.bucket


class Arrow:
    name = "pyarrow.fs"

    def __init__(self, server):
        from pyarrow import fs

        self.pafs = fs
        host = server.endpoint.split("://", 1)[1]
        self.fs = fs.S3FileSystem(access_key=server.access_key, secret_key=server.secret_key, region=server.region,
                                  endpoint_override=host, scheme="http")
        self.bucket = server.bucket

    def put(self, src: Path, files: list[Path], prefix: str) -> None:
        self.pafs.copy_files(str(src), f"{self.bucket}/{prefix}", source_filesystem=self.pafs.LocalFileSystem(),
                             destination_filesystem=self.fs, use_threads=True)

    def list(self, prefix: str) -> int:
        infos = self.fs.get_file_info(self.pafs.FileSelector(f"{self.bucket}/{prefix}", recursive=True))
        return sum(i.type == self.pafs.FileType.File for i in infos)

    def get(self, rels: list[str], prefix: str, dest: Path) -> None:
        self.pafs.copy_files(f"{self.bucket}/{prefix}", str(dest), source_filesystem=self.fs,
                             destination_filesystem=self.pafs.LocalFileSystem(), use_threads=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=200, help="small files (4 kB each)")
    ap.add_argument("--big-mb", type=int, default=8, help="size of the one big file")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    from tests.servers import seaweedfs

    with tempfile.TemporaryDirectory() as tmp, seaweedfs() as server:
        src = Path(tmp) / "version"
        files = make_version(src, args.small, args.big_mb)
        rels = sorted(f.relative_to(src).as_posix() for f in files)
        total = sum(f.stat().st_size for f in files)
        clients = [S3fs(server), Obstore(server), ObstoreFsspec(server), Arrow(server)]
        times: dict[str, dict[str, list[float]]] = {c.name: {"put": [], "list": [], "get": []} for c in clients}
        for rnd in range(args.rounds):
            for c in clients:  # interleaved: load on the machine hits every library alike
                prefix = f"bench/{c.name}/r{rnd}"
                t0 = time.perf_counter()
                c.put(src, files, prefix)
                t1 = time.perf_counter()
                n = c.list(prefix)
                t2 = time.perf_counter()
                dest = Path(tmp) / f"get-{c.name}-{rnd}"
                dest.mkdir()
                c.get(rels, prefix, dest)
                t3 = time.perf_counter()
                assert n == len(files), (c.name, n)
                got = sum((dest / r).stat().st_size for r in rels)
                assert got == total and (dest / rels[-1]).read_bytes() == (src / rels[-1]).read_bytes(), c.name
                times[c.name]["put"].append(t1 - t0)
                times[c.name]["list"].append(t2 - t1)
                times[c.name]["get"].append(t3 - t2)

    mb = total / 1e6
    print(f"version: {len(files)} files ({args.small} x 4 kB + 1 x {args.big_mb} MB), {mb:.1f} MB; "
          f"SeaweedFS on 127.0.0.1; median of {args.rounds} rounds; ratio = time / s3fs time (lower is faster)")
    base = {op: statistics.median(times["s3fs"][op]) for op in ("put", "list", "get")}
    print(f"{'library':<15} {'put s':>7} {'MB/s':>7} {'files/s':>8} {'ratio':>6} | {'list s':>7} {'ratio':>6} | "
          f"{'get s':>7} {'MB/s':>7} {'files/s':>8} {'ratio':>6}")
    for name, t in times.items():
        put, lst, get = (statistics.median(t[op]) for op in ("put", "list", "get"))
        print(f"{name:<15} {put:7.3f} {mb / put:7.1f} {len(files) / put:8.0f} {put / base['put']:6.2f} | "
              f"{lst:7.3f} {lst / base['list']:6.2f} | {get:7.3f} {mb / get:7.1f} {len(files) / get:8.0f} "
              f"{get / base['get']:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
