"""Per-chunk cache of extracted triples, keyed by (extractor name, version, chunk digest).

Each ``put_many`` writes one new immutable shard (atomic), so writers never touch each other's files;
readers take each digest from the first shard that has it. Layout, races, ``compact`` and object-store
roots: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
from pathlib import Path

import polars as pl

from ml.fsutil import atomic_write_bytes
from ml.paths import lineage_home, work_dir
from ml.storage import is_url
from ml.relation_triples.base import VERSION_RE, Triple

SHARD_SCHEMA = {
    "digest": pl.String, "subject": pl.String, "relation": pl.String, "object": pl.String,
    "confidence": pl.Float64, "start": pl.Int64, "end": pl.Int64,
}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{8,64}$")
_READ_RETRIES = 5


def default_cache_root(home: str | os.PathLike | None = None) -> Path:
    """A suggested cache root: ``<LINEAGE_HOME>/work/relation_triples/cache``."""
    return work_dir(lineage_home(home)) / "relation_triples" / "cache"


class TripleCache:
    def __init__(self, root: Path, extractor_name: str, extractor_version: str):
        if not isinstance(extractor_name, str) or not _NAME_RE.match(extractor_name):
            raise ValueError(f"invalid extractor name {extractor_name!r}")
        if (not isinstance(extractor_version, str) or not VERSION_RE.match(extractor_version)
                or ".." in extractor_version):
            raise ValueError(f"invalid extractor version {extractor_version!r}")
        self.remote = is_url(root)
        if self.remote:
            from ml.storage import StorageUrl

            self.root = StorageUrl(root)
        else:
            self.root = Path(root)
        self.extractor_name = extractor_name
        self.extractor_version = extractor_version
        self.dir = self.root / extractor_name / extractor_version

    def __repr__(self) -> str:
        return f"TripleCache({str(self.dir)!r})"

    def shards(self) -> list[Path]:
        if self.remote:
            from ml.storage import SCHEME, objects

            return sorted(SCHEME + k for k in objects(self.dir)
                          if re.fullmatch(r"shard-[^/]*\.parquet", k.rsplit("/", 1)[-1]))
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("shard-*.parquet"))

    def _scan(self, shards: list[Path], digests: list[str] | None) -> pl.DataFrame:
        if self.remote:  # shards are small: fetched together, read from memory
            from ml.storage import filesystem

            got = filesystem().cat([s[len("s3://"):] for s in shards])
            lf = pl.concat([pl.read_parquet(io.BytesIO(got[s[len("s3://"):]]), schema=SHARD_SCHEMA)
                            .with_columns(_shard=pl.lit(s)) for s in shards]).lazy()
        else:
            lf = pl.scan_parquet(shards, schema=SHARD_SCHEMA, include_file_paths="_shard")
        if digests is not None:
            lf = lf.filter(pl.col("digest").is_in(digests))
        # One copy per digest: the rows of the first shard holding it.
        lf = lf.filter(pl.col("_shard") == pl.col("_shard").min().over("digest"))
        return lf.collect()

    def _read(self, digests: list[str] | None) -> pl.DataFrame:
        for attempt in range(_READ_RETRIES):
            shards = self.shards()
            if not shards:
                return pl.DataFrame(schema={**SHARD_SCHEMA, "_shard": pl.String})
            try:
                return self._scan(shards, digests)
            except (FileNotFoundError, OSError, pl.exceptions.ComputeError):
                # a concurrent compact() removed a shard between listing and reading
                if attempt == _READ_RETRIES - 1 or all(self._exists(p) for p in shards):
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def get_many(self, digests: list[str]) -> dict[str, list[Triple]]:
        """digest -> cached triples (possibly empty), for the digests that are cached."""
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return {}
        df = self._read(wanted)
        out: dict[str, list[Triple]] = {}
        for d, subj, rel, obj, conf, start, end, _shard in df.iter_rows():
            triples = out.setdefault(d, [])
            if rel is not None:
                triples.append(Triple(subj, rel, obj, conf, start, end))
        return out

    def put_many(self, items: dict[str, list[Triple]]) -> None:
        """Store every digest's triples (an empty list too) in one new shard."""
        if not items:
            return
        cols: dict[str, list] = {name: [] for name in SHARD_SCHEMA}
        for digest, triples in items.items():
            if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
                raise ValueError(f"invalid chunk digest {digest!r}")
            rows = [(t.subject, t.relation, t.object, float(t.confidence), t.start, t.end)
                    for t in triples] or [(None, None, None, None, None, None)]
            for row in rows:
                cols["digest"].append(digest)
                for name, value in zip(("subject", "relation", "object", "confidence", "start", "end"), row):
                    cols[name].append(value)
        self._write(pl.DataFrame(cols, schema=SHARD_SCHEMA))

    def _exists(self, shard) -> bool:
        if self.remote:
            from ml.storage import filesystem

            return filesystem().exists(shard[len("s3://"):])
        return Path(shard).exists()

    def _write(self, df: pl.DataFrame) -> Path:
        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd", statistics=True)
        path = self.dir / f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
        if self.remote:
            from ml.storage import write_bytes_atomic

            write_bytes_atomic(path, buf.getvalue())  # one PUT: the shard appears whole or not at all
        else:
            atomic_write_bytes(path, buf.getvalue())
        return path

    def compact(self) -> int:
        """Merge all shards into one; returns how many shards were folded (0 or >= 2)."""
        shards = self.shards()
        if len(shards) < 2:
            return 0
        df = self._scan(shards, None).drop("_shard")
        self._write(df)
        for p in shards:
            if self.remote:
                from ml.storage import filesystem

                try:
                    filesystem().rm_file(p[len("s3://"):])
                except FileNotFoundError:
                    pass
            else:
                p.unlink(missing_ok=True)
        return len(shards)

    def __len__(self) -> int:
        """Number of cached chunks."""
        df = self._read(None)
        return df["digest"].n_unique() if df.height else 0
