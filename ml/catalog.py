"""Append-only catalog of versions, lineage, stats, metrics, checks and decisions (Parquet batches, DuckDB views).

Writers never open a database: one ``append`` is one batch, staged and renamed into
``catalog/batches/<batch_id>/``, so its rows appear in every table at once or not at all. A version's own
rows go in a deterministic batch (``own_batch_id``), so racing writers record them exactly once. Layout,
views and repair: DESIGN.md, "The catalog contract" and "Module notes".
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import duckdb
import polars as pl

from ml.faults import fault_point
from ml.fsutil import atomic_write_json, digest_json, fsync_dir
from ml.paths import catalog_dir

S, I, F, B = pl.String, pl.Int64, pl.Float64, pl.Boolean
TS = pl.Datetime("us", "UTC")

# Column order and types of every table. DESIGN.md's minimum columns come first.
SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "asset_versions": {
        "asset": S, "data_version": S, "code_version": S, "fingerprint": S, "run_id": S,
        "created_at": TS, "path": S, "bytes": I, "rows": I, "cache_hit": B,
    },
    "lineage_edges": {
        "asset": S, "data_version": S, "upstream_asset": S, "upstream_version": S,
        "run_id": S, "created_at": TS,
    },
    "dataset_stats": {"asset": S, "data_version": S, "stat": S, "value": F},
    "training_metrics": {
        "asset": S, "data_version": S, "run_id": S, "step": I, "split": S, "metric": S, "value": F,
    },
    "check_results": {
        "asset": S, "data_version": S, "check_name": S, "passed": B, "severity": S, "details": S,
        "run_id": S, "created_at": TS,
    },
    "quarantine": {
        "source": S, "line": I, "reason": S, "excerpt": S, "run_id": S,
        "asset": S, "data_version": S, "detail": S,
    },
    "doc_decisions": {
        "doc_id": S, "data_version": S, "decision": S, "reason": S, "duplicate_of": S, "asset": S,
        "similarity": F,  # exact Jaccard with duplicate_of (ml/cleaned_chunks/pipeline.py: DECISION_SCHEMA)
    },
    # which bundle component is promoted (the latest row per component wins), by whom and when
    "promotions": {
        "component": S, "bundle_version": S, "model_version": S, "promoted_by": S, "promoted_at": TS,
        "note": S,
    },
    # held-out evaluation (assets/evaluation.py, ml/evaluation/): one row per model version, metric and split of a
    # model_evaluation version (asset, data_version); n = test items the metric was measured on
    "eval_results": {
        "asset": S, "data_version": S, "model_asset": S, "model_version": S, "dataset_asset": S,
        "dataset_version": S, "split": S, "metric": S, "value": F, "n": I, "run_id": S, "created_at": TS,
    },
    # sweeps (ml/sweeps.py): one row per point of a sweep version, ranked by the sweep's validation metric
    "sweep_results": {
        "sweep": S, "data_version": S, "point": S, "params": S, "asset": S, "model_version": S, "metric": S,
        "value": F, "rank": I, "best": B, "run_id": S, "created_at": TS,
    },
    # runs that failed: written by the run-failure sensor
    "run_failures": {
        "run_id": S, "job_name": S, "step_key": S, "error": S, "failed_at": TS,
    },
    # run facts (ml/run_record.py): numbers of one run that built a version, outside its content; one row
    # per run and fact (a rebuild landing on an existing version adds its own rows)
    "run_facts": {"asset": S, "data_version": S, "run_id": S, "fact": S, "value": F, "recorded_at": TS},
    # `lineage rebuild` (ml/rebuild.py): a version rebuilt from its manifest and compared file by file
    "rebuilds": {"asset": S, "data_version": S, "rebuilt_at": TS, "identical": B, "detail": S,
                 "rebuilt_version": S, "seconds": F},
    # stored versions whose files no longer match their manifest (ml/store_base.py: verify_tree), one row per file
    "corrupt_versions": {
        "asset": S, "data_version": S, "path": S, "expected_sha256": S, "actual_sha256": S,
        "expected_bytes": I, "actual_bytes": I, "detail": S, "detected_by": S, "run_id": S,
        "detected_at": TS, "moved_to": S,
    },
}

BATCHES = "batches"
SCHEMA_BATCH = "_schema"
STAGING = "_staging"
# tables whose rows belong to one (asset, data_version) and are written once per version
VERSION_OWNED = ("dataset_stats", "quarantine", "doc_decisions", "training_metrics", "eval_results")


def own_batch_id(asset: str, data_version: str) -> str:
    """The batch holding the rows asset@data_version owns (deterministic: at most one exists)."""
    return f"v-{asset}-{data_version}"


def repair_batch_id(asset: str, data_version: str) -> str:
    """The batch ``repair_version`` writes for a version the catalog missed."""
    return f"r-{asset}-{data_version}"


def corrupt_rows(err, detected_by: str, run_id: str = "", moved_to: Any = None) -> list[dict[str, Any]]:
    """``corrupt_versions`` rows for a ``ml.store.CorruptVersionError``."""
    at = now_utc()
    return [{"asset": err.asset, "data_version": err.data_version, "path": p["path"],
             "expected_sha256": p["expected_sha256"], "actual_sha256": p["actual_sha256"],
             "expected_bytes": p["expected_bytes"], "actual_bytes": p["actual_bytes"], "detail": p.get("why") or "",
             "detected_by": detected_by, "run_id": run_id, "detected_at": at,
             "moved_to": str(moved_to) if moved_to else None} for p in err.problems]


class CatalogError(ValueError):
    pass


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def check_result_rows(asset: str, data_version: str, run_id: str,
                      checks: Iterable[tuple[str, bool, str, str]]) -> list[dict[str, Any]]:
    """``check_results`` rows for one version: (check_name, passed, severity 'ERROR'|'WARN', details text)."""
    created = now_utc()
    return [{"asset": asset, "data_version": data_version, "check_name": name, "passed": bool(passed),
             "severity": severity, "details": details, "run_id": run_id, "created_at": created}
            for name, passed, severity, details in checks]


def stat_rows(asset: str, data_version: str, stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``dataset_stats`` rows: the numeric entries of a version's stats."""
    return [{"asset": asset, "data_version": data_version, "stat": k, "value": float(v)}
            for k, v in stats.items() if isinstance(v, (int, float))]


def _frame(table: str, rows: pl.DataFrame | Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    schema = SCHEMAS[table]
    df = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(list(rows), infer_schema_length=None)
    unknown = set(df.columns) - set(schema)
    if unknown:
        raise CatalogError(f"{table}: unknown columns {sorted(unknown)}; known: {list(schema)}")
    exprs = []
    for name, dtype in schema.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype, strict=True))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(exprs) if df.width else pl.DataFrame(schema=schema)


class Catalog:
    """The catalog at a local home (this class) or at an ``s3://`` home (``ObjectCatalog``, chosen
    by the constructor from the home it is given)."""

    def __new__(cls, home: Path | str):
        from ml.storage import is_url

        if cls is Catalog and is_url(home):
            return super().__new__(ObjectCatalog)
        return super().__new__(cls)

    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = catalog_dir(self.home)
        self.batches = self.root / BATCHES
        self.db_path = self.root / "catalog.duckdb"
        self._ready = False

    # ---- writing ------------------------------------------------------------------------
    def init(self) -> None:
        """Create the layout and one empty typed file per table (idempotent, concurrent-safe)."""
        if self._ready:
            return
        schema_dir = self.batches / SCHEMA_BATCH
        schema_dir.mkdir(parents=True, exist_ok=True)
        for table, schema in SCHEMAS.items():
            target = schema_dir / f"{table}.parquet"
            if target.exists() and pl.read_parquet_schema(target) == schema:
                continue
            tmp = schema_dir / f".{table}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            pl.DataFrame(schema=schema).write_parquet(tmp)
            os.replace(tmp, target)
        self._ready = True

    def has_batch(self, batch_id: str) -> bool:
        return (self.batches / batch_id).is_dir()

    def _batch(self, tables: Mapping[str, pl.DataFrame | Iterable[Mapping[str, Any]]],
               batch_id: str | None) -> tuple[dict[str, pl.DataFrame], str]:
        """The non-empty frames of a batch and its id ({} when empty or when ``batch_id`` exists already)."""
        frames = {}
        for table, rows in tables.items():
            if table not in SCHEMAS:
                raise CatalogError(f"unknown catalog table {table!r}; known: {sorted(SCHEMAS)}")
            df = _frame(table, rows)
            if df.height:
                frames[table] = df
        if not frames:
            return {}, ""
        if batch_id is None:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            batch_id = f"{stamp}-{time.time_ns() % 10**9:09d}-{os.getpid()}-{secrets.token_hex(4)}"
        elif self.has_batch(batch_id):
            return {}, batch_id
        return frames, batch_id

    def append(self, tables: Mapping[str, pl.DataFrame | Iterable[Mapping[str, Any]]],
               batch_id: str | None = None) -> str | None:
        """Write one batch of rows (several tables) atomically. Returns the batch id.

        With a ``batch_id`` (``own_batch_id``) the write is idempotent: when that batch exists
        already, nothing is written and None is returned."""
        self.init()
        frames, batch_id = self._batch(tables, batch_id)
        if not frames:
            return None
        # staging name: <batch>~<pid>~<rand>~<host> so ``lineage gc`` can tell a dead writer's leftover
        staging = self.root / STAGING / f"{batch_id}~{os.getpid()}~{secrets.token_hex(4)}~{socket.gethostname()}"
        staging.mkdir(parents=True)
        try:
            for table, df in frames.items():
                path = staging / f"{table}.parquet"
                df.write_parquet(path)
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())
            fsync_dir(staging)
            fault_point("catalog.before_rename")
            try:
                os.rename(staging, self.batches / batch_id)
            except OSError as exc:  # a deterministic batch another writer renamed into place first
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and self.has_batch(batch_id):
                    return None
                raise
            fsync_dir(self.batches)
        finally:
            if staging.exists():
                for p in staging.iterdir():
                    p.unlink()
                staging.rmdir()
        return batch_id

    # ---- reading ------------------------------------------------------------------------
    def view_sql(self) -> list[str]:
        out = []
        for table in SCHEMAS:
            glob = str(self.batches / "*" / f"{table}.parquet").replace("'", "''")
            if table in VERSION_OWNED:  # only the first batch of each version counts (races, old catalogs)
                out.append(
                    f"CREATE OR REPLACE VIEW {table} AS SELECT * EXCLUDE (filename, _first) FROM ("
                    f"SELECT *, min(filename) OVER (PARTITION BY asset, data_version) AS _first FROM "
                    f"read_parquet('{glob}', union_by_name=true, filename=true)) "
                    f"WHERE filename = _first OR asset IS NULL OR data_version IS NULL"
                )
            else:
                out.append(
                    f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM "
                    f"read_parquet('{glob}', union_by_name=true)"
                )
        return out

    def ensure_views(self) -> Path:
        """Create/refresh the views in catalog.duckdb for people and tools that open it.

        Done under a file lock and only when the view definitions changed (new home
        path, new schema), so writers normally never touch the database file.
        """
        self.init()
        stamp_path = self.root / "views.json"
        stamp = {"sql": digest_json(self.view_sql()), "home": str(self.home)}
        if stamp_path.exists() and self.db_path.exists():
            try:
                if json.loads(stamp_path.read_text()) == stamp:
                    return self.db_path
            except ValueError:
                pass
        with open(self.root / ".views.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            con = duckdb.connect(str(self.db_path))
            try:
                for sql in self.view_sql():
                    con.execute(sql)
            finally:
                con.close()
            atomic_write_json(stamp_path, stamp)
        return self.db_path

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with every catalog table as a view."""
        self.init()
        con = duckdb.connect(":memory:")
        for sql in self.view_sql():
            con.execute(sql.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW"))
        return con

    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        con = self.connect()
        try:
            return con.sql(sql, params=params or None).pl()
        finally:
            con.close()

    def table(self, name: str) -> pl.DataFrame:
        if name not in SCHEMAS:
            raise CatalogError(f"unknown catalog table {name!r}")
        return self.query(f"SELECT * FROM {name}")

    # ---- repair ---------------------------------------------------------------------------
    def knows_version(self, asset: str, data_version: str) -> bool:
        if self.has_batch(own_batch_id(asset, data_version)) or self.has_batch(repair_batch_id(asset, data_version)):
            return True
        return bool(self.query("SELECT 1 FROM asset_versions WHERE asset = ? AND data_version = ? LIMIT 1",
                               [asset, data_version]).height)

    def repair_version(self, version, force: bool = False) -> bool:
        """Record a stored version (``ml.store.StoredVersion``) the catalog does not know: its
        asset_versions row as its manifest tells it (the run that built it, cache_hit false), its
        lineage edges and its dataset_stats. Rows only the asset's own code can derive from the
        files (quarantine, doc_decisions, training metrics) are written by the next
        materialization of that asset, which finds the version's own batch missing. Idempotent.
        A version whose writer still runs (``StoredVersion.writer_alive``) is left to it unless
        ``force``. Returns True when rows were written."""
        if self.knows_version(version.asset, version.data_version):
            return False
        if version.writer_alive() and not force:  # its maker is still running: it writes the rows itself
            return False
        m = version.manifest
        created = m.get("created_at")
        created = datetime.fromisoformat(created) if created else now_utc()
        rows: dict[str, Any] = {
            "asset_versions": [{
                "asset": version.asset, "data_version": version.data_version,
                "code_version": m.get("code_version"), "fingerprint": m.get("fingerprint"),
                "run_id": m.get("run_id", ""), "created_at": created, "path": str(version.location),
                "bytes": version.bytes, "rows": m.get("rows"), "cache_hit": False,
            }],
            "lineage_edges": [
                {"asset": version.asset, "data_version": version.data_version, "upstream_asset": up,
                 "upstream_version": uv, "run_id": m.get("run_id", ""), "created_at": created}
                for up, uv in sorted((m.get("upstream") or {}).items())
            ],
            "dataset_stats": stat_rows(version.asset, version.data_version, version.stats),
        }
        return self.append(rows, batch_id=repair_batch_id(version.asset, version.data_version)) is not None

    # ---- questions asked often ------------------------------------------------------------
    def latest_versions(self) -> pl.DataFrame:
        """Per asset: the newest materialization, and how many distinct versions exist."""
        return self.query(
            """
            SELECT asset, data_version, code_version, rows, bytes, cache_hit, created_at, run_id, n_versions
            FROM (
              SELECT *, row_number() OVER (PARTITION BY asset ORDER BY created_at DESC) AS rn,
                     count(DISTINCT data_version) OVER (PARTITION BY asset) AS n_versions
              FROM asset_versions)
            WHERE rn = 1 ORDER BY created_at
            """
        )

    def latest_version_of(self, asset: str) -> str | None:
        df = self.query(
            "SELECT data_version FROM asset_versions WHERE asset = ? ORDER BY created_at DESC LIMIT 1", [asset]
        )
        return df.item(0, 0) if df.height else None

    def trace(self, asset: str, data_version: str | None = None) -> dict[str, Any]:
        """Version-level lineage of one asset version: everything upstream and downstream."""
        data_version = data_version or self.latest_version_of(asset)
        if data_version is None:
            raise CatalogError(f"no version of {asset!r} in the catalog")
        matches = self.query(
            "SELECT DISTINCT data_version FROM asset_versions WHERE asset = ? AND data_version LIKE ? || '%'",
            [asset, data_version],
        )["data_version"].to_list()
        if not matches:
            raise CatalogError(f"{asset}@{data_version} is not in the catalog")
        if len(matches) > 1:  # a prefix may name several versions
            raise CatalogError(f"version prefix {data_version!r} of {asset} is ambiguous: {sorted(matches)}")
        data_version = matches[0]
        edges = self.query(
            "SELECT DISTINCT asset, data_version, upstream_asset, upstream_version FROM lineage_edges"
        ).rows()
        ups: dict[tuple[str, str], set[tuple[str, str]]] = {}
        downs: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for a, v, ua, uv in edges:
            ups.setdefault((a, v), set()).add((ua, uv))
            downs.setdefault((ua, uv), set()).add((a, v))

        def walk(node: tuple[str, str], graph, seen) -> dict[str, Any]:
            children = []
            for nxt in sorted(graph.get(node, ())):
                if nxt in seen:
                    continue
                children.append(walk(nxt, graph, seen | {nxt}))
            return {"asset": node[0], "data_version": node[1], "children": children}

        root = (asset, data_version)
        return {
            "asset": asset,
            "data_version": data_version,
            "upstream": walk(root, ups, {root})["children"],
            "downstream": walk(root, downs, {root})["children"],
        }


# ---- object storage (s3://bucket/prefix homes) ----------------------------------------------------

COMMIT = "_commit.json"


class ObjectCatalog(Catalog):
    """The catalog on an S3-compatible object store: the same append-only batches, as objects.

        catalog/batches/_schema/<table>-<digest>.parquet        one empty typed file per table schema
        catalog/batches/<batch_id>/<writer>/<table>.parquet     a batch's files, one writer's upload
        catalog/batches/<batch_id>/_commit.json                 written last, create-only: {"writer": ...}

    ``<writer>`` is ``<pid>~<rand>~<host>``. There is no rename: a batch's Parquet files are uploaded
    under the writer's own prefix, then ``_commit.json`` names that writer (``If-None-Match: *``),
    so a batch's rows appear in every table at once or not at all, and of two writers racing on a
    deterministic batch id (``own_batch_id``) exactly one wins; the loser's files are deleted (or,
    if it dies first, found by ``lineage gc``). Readers list the committed batches and hand DuckDB
    local read copies of the committed writers' files, fetched once per machine with obstore (no DuckDB
    extension is installed or loaded: no network).
    """

    def __init__(self, home: str):
        from ml.storage import StorageUrl

        self.home = StorageUrl(str(home))
        self.root = self.home / "catalog"
        self.batches = self.root / BATCHES
        self.db_path = None  # no catalog.duckdb on an object store: every query builds its views
        self._ready = False

    @property
    def fs(self):
        from ml.storage import filesystem

        return filesystem()

    def _schema_url(self, table: str):
        return self.batches / SCHEMA_BATCH / f"{table}-{digest_json({k: str(v) for k, v in SCHEMAS[table].items()}, 8)}.parquet"

    def init(self) -> None:
        if self._ready:
            return
        import io

        want = {table: self._schema_url(table) for table in SCHEMAS}
        sdir = self.batches / SCHEMA_BATCH
        from ml.storage import objects

        have = set(objects(sdir))
        for table, url in want.items():
            if url.key not in have:
                buf = io.BytesIO()
                pl.DataFrame(schema=SCHEMAS[table]).write_parquet(buf)
                self.fs.pipe_file(url.key, buf.getvalue())  # one PUT: whole or absent
        self._ready = True

    def has_batch(self, batch_id: str) -> bool:
        return self.fs.exists((self.batches / batch_id / COMMIT).key)

    def append(self, tables, batch_id: str | None = None) -> str | None:
        import io

        from ml.storage import create_only

        self.init()
        frames, batch_id = self._batch(tables, batch_id)
        if not frames:
            return None
        writer = f"{os.getpid()}~{secrets.token_hex(4)}~{socket.gethostname()}"
        bdir = self.batches / batch_id
        keys = []
        for table, df in frames.items():
            buf = io.BytesIO()
            df.write_parquet(buf)
            key = (bdir / writer / f"{table}.parquet").key
            self.fs.pipe_file(key, buf.getvalue())
            keys.append(key)
        fault_point("catalog.before_rename")
        commit = json.dumps({"writer": writer, "tables": sorted(frames), "host": socket.gethostname(),
                             "pid": os.getpid(), "committed_at": time.time()}).encode()
        if not create_only(bdir / COMMIT, commit):  # another writer committed this batch first
            self.fs.rm(keys)
            return None
        return batch_id

    def committed_files(self) -> dict[str, list[str]]:
        """table -> s3:// URLs of its Parquet files in committed batches (the schema file first)."""
        from ml.storage import SCHEME

        from ml.storage import objects

        self.init()
        keys = objects(self.batches)
        by_batch: dict[str, dict[str, list[str]]] = {}
        commits = []
        for key in keys:
            rel = self.batches.relative(key)
            parts = rel.split("/")
            if parts[0] == SCHEMA_BATCH:
                continue
            if len(parts) == 2 and parts[1] == COMMIT:
                commits.append(key)
            elif len(parts) == 3 and parts[2].endswith(".parquet"):
                by_batch.setdefault(parts[0], {}).setdefault(parts[1], []).append(key)
        committed = {}
        ambiguous = []
        for key in commits:
            batch = self.batches.relative(key).split("/")[0]
            writers = by_batch.get(batch, {})
            if len(writers) == 1:
                committed[batch] = next(iter(writers))
            elif writers:
                ambiguous.append(key)
        if ambiguous:  # several uploads under one batch id: the commit marker names the winner
            for key, raw in self.fs.cat(ambiguous, on_error="omit").items():
                committed[self.batches.relative(key).split("/")[0]] = json.loads(raw)["writer"]
        out: dict[str, list[str]] = {t: [SCHEME + self._schema_url(t).key] for t in SCHEMAS}
        for batch, writer in sorted(committed.items()):
            for key in by_batch.get(batch, {}).get(writer, []):
                table = key.rsplit("/", 1)[-1][: -len(".parquet")]
                if table in out:
                    out[table].append(SCHEME + key)
        return out

    def read_copies(self, files: dict[str, list[str]]) -> dict[str, list[str]]:
        """table -> local read copies of its committed files, under ``<scratch>/catalog/<home digest>/``.
        A committed file never changes (its key names its writer's upload, a schema file its schema's
        digest), so each is fetched once per machine, complete or not at all (a temporary name, then a
        rename): a query costs one listing plus the new batches, not a GET of every batch ever written."""
        from ml.storage import SCHEME, download, scratch_dir

        root = scratch_dir() / "catalog" / digest_json(str(self.home), 12)
        out: dict[str, list[str]] = {}
        missing: dict[str, Path] = {}
        for table, urls in files.items():
            out[table] = []
            for url in urls:
                key = url.removeprefix(SCHEME)
                path = root / key
                if not path.exists():
                    missing[key] = path
                out[table].append(str(path))
        if missing:
            parts = [p.with_name(f".{p.name}.{os.getpid()}~{secrets.token_hex(4)}.part") for p in missing.values()]
            try:
                for part in parts:
                    part.parent.mkdir(parents=True, exist_ok=True)
                download(list(missing), parts)
                for part, path in zip(parts, missing.values()):
                    os.replace(part, path)
            finally:
                for part in parts:
                    part.unlink(missing_ok=True)
        return out

    def view_sql(self) -> list[str]:
        files = self.read_copies(self.committed_files())
        out = []
        for table in SCHEMAS:
            listed = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files[table]) + "]"
            if table in VERSION_OWNED:
                out.append(
                    f"CREATE OR REPLACE VIEW {table} AS SELECT * EXCLUDE (filename, _first) FROM ("
                    f"SELECT *, min(filename) OVER (PARTITION BY asset, data_version) AS _first FROM "
                    f"read_parquet({listed}, union_by_name=true, filename=true)) "
                    f"WHERE filename = _first OR asset IS NULL OR data_version IS NULL"
                )
            else:
                out.append(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({listed}, union_by_name=true)")
        return out

    def ensure_views(self):
        """Nothing to refresh: on an object store there is no catalog.duckdb; ``connect``/``query``
        build the views over the committed batches each time. Returns the catalog's URL."""
        self.init()
        return self.root

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB over the committed batches' local read copies (``read_copies``;
        extension autoload off: no network)."""
        self.init()
        con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                 "autoload_known_extensions": False})
        for sql in self.view_sql():
            con.execute(sql.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW"))
        return con
