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
import shutil
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
# compaction (``Catalog.compact``): batch ``!c-<generation>`` holds the rows of every batch it absorbed; "!"
# sorts before the digits of timestamp ids, "r-", "v-" and "_schema", so its rows come first in min(filename)
COMPACTED = "!c-"
ABSORBED = "_absorbed"  # marker column: one row per absorbed batch id in each table file of a compacted batch
ABSORBED_LIST = "_absorbed.json"  # local compacted batch: its absorbed ids (object store: in its _commit.json)


def compacted_id(generation: int) -> str:
    return f"{COMPACTED}{generation:06d}"


def _generation(batch_id: str) -> int:
    try:
        return int(batch_id[len(COMPACTED):]) if batch_id.startswith(COMPACTED) else 0
    except ValueError:
        return 0


def keep_absorbed_s() -> float:
    """How long absorbed batches stay after the compaction that absorbed them (``$LINEAGE_CATALOG_KEEP_S``,
    default 15 min): a listing is not atomic (S3 pages, directory reads), so a reader whose listing began
    before the commit may miss the compacted batch; while the absorbed batches are still there it answers
    from them, as before the compaction. The next compaction, or ``lineage gc``, removes them after that."""
    return float(os.environ.get("LINEAGE_CATALOG_KEEP_S", 15 * 60))


def _remembered(batch_id: str) -> bool:
    """Ids a compaction keeps naming after they are removed: deterministic ones (``v-``, ``r-``, compacted),
    which a writer could create again; a timestamp id is never written twice."""
    return not batch_id[:1].isdigit()


class Snapshot:
    """One listing of the committed batches: ``batches`` batch id -> {table: file} (absorbed ones included
    until removed), ``lists`` compacted batch id -> the ids it absorbed, ``keys`` (object store) batch id ->
    every object under its prefix."""

    def __init__(self, batches: dict[str, dict[str, str]], lists: dict[str, frozenset[str]],
                 keys: dict[str, list[str]] | None = None, committed_at: dict[str, float] | None = None):
        self.batches, self.lists, self.keys = batches, lists, keys or {}
        self.committed_at = committed_at or {}  # compacted batch id -> when it was committed
        self.gone = frozenset().union(*lists.values()) if lists else frozenset()
        self.visible = [b for b in sorted(batches) if b not in self.gone]

    def absorbed_present(self) -> list[str]:
        return [b for b in sorted(self.batches) if b in self.gone]

    def absorber(self, batch_id: str) -> str:
        return max((c for c, ids in self.lists.items() if batch_id in ids), key=_generation, default="")

    def expired(self, keep_s: float, now: float | None = None) -> list[str]:
        """Absorbed batches still present whose first absorbing compaction committed ``keep_s`` or more ago."""
        now = time.time() if now is None else now
        return [b for b in self.absorbed_present()
                if now - min(self.committed_at.get(c, 0.0) for c, ids in self.lists.items() if b in ids) >= keep_s]


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def select_sql(table: str, source: str, batch_expr: str | None = None) -> str:
    """The SELECT of a catalog table over ``source`` (read_parquet's first argument: files or globs that
    include a file with the ``_absorbed`` marker column). With ``batch_expr`` (the batch id of a row, from
    ``filename``) rows of batches a compacted batch in the same scan absorbed are left out, inside that one
    scan (a glob is expanded once, so the rows and the markers come from the same moment); without, the
    caller listed only visible batches and the marker rows are dropped. Version-owned tables keep the
    first batch (min filename) of each (asset, data_version)."""
    scan = f"SELECT * FROM read_parquet({source}, union_by_name=true, filename=true)"
    if batch_expr:
        scan = (f"SELECT * EXCLUDE (_gone) FROM (SELECT *, bool_or({ABSORBED} IS NOT NULL) OVER "
                f"(PARTITION BY coalesce({ABSORBED}, {batch_expr})) AS _gone FROM ({scan})) WHERE NOT _gone")
    else:
        scan = f"SELECT * FROM ({scan}) WHERE {ABSORBED} IS NULL"
    if table in VERSION_OWNED:  # only the first batch of each version counts (races, old catalogs)
        return (f"SELECT * EXCLUDE (filename, {ABSORBED}, _first) FROM ("
                f"SELECT *, min(filename) OVER (PARTITION BY asset, data_version) AS _first FROM ({scan})) "
                f"WHERE filename = _first OR asset IS NULL OR data_version IS NULL")
    return f"SELECT * EXCLUDE (filename, {ABSORBED}) FROM ({scan})"


def _file_list(files: list[str]) -> str:
    return "[" + ", ".join(_sql_str(f) for f in files) + "]"


def _is_missing_file(exc: BaseException) -> bool:
    return isinstance(exc, (FileNotFoundError, duckdb.IOException))
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
        marker = schema_dir / f"{ABSORBED}.parquet"  # gives every view the marker column (compaction)
        if not marker.exists():
            tmp = schema_dir / f".{ABSORBED}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            pl.DataFrame(schema={ABSORBED: S}).write_parquet(tmp)
            os.replace(tmp, marker)
        self._ready = True

    def has_batch(self, batch_id: str) -> bool:
        """True when the batch is committed, or was and a compaction absorbed it (its rows live on in the
        compacted batch: an idempotent writer must not write them again)."""
        return self._committed(batch_id) or batch_id in self._gone()

    def _committed(self, batch_id: str) -> bool:
        return (self.batches / batch_id).is_dir()

    def _read_list(self, batch_id: str) -> frozenset[str]:
        """The ids a compacted batch absorbed (immutable: cached by id)."""
        return self._read_marker(batch_id)[0]

    def _read_marker(self, batch_id: str) -> tuple[frozenset[str], float]:
        """(absorbed ids, committed_at) of a local compacted batch (immutable: cached by id)."""
        cache = self.__dict__.setdefault("_lists", {})
        if batch_id not in cache:
            marker = json.loads((self.batches / batch_id / ABSORBED_LIST).read_text())
            cache[batch_id] = (frozenset(marker["absorbed"]), float(marker.get("committed_at", 0.0)))
        return cache[batch_id]

    def _gone(self) -> frozenset[str]:
        """Every batch id a present compacted batch absorbed."""
        for _ in range(20):
            try:
                names = [n for n in os.listdir(self.batches) if n.startswith(COMPACTED)]
            except FileNotFoundError:  # no catalog yet
                return frozenset()
            try:
                return frozenset().union(*(self._read_list(n) for n in names))
            except FileNotFoundError:  # a compacted batch absorbed and removed meanwhile: its successor names all
                continue
        raise CatalogError(f"{self.batches}: compacted batches keep vanishing while listed")

    def _snapshot(self, init: bool = True) -> Snapshot:
        """One listing of batches/ (a batch that vanishes while listed was removed by a compaction that
        committed meanwhile, maybe after this listing began: list again). ``init=False``: create nothing
        (``lineage gc``'s dry run)."""
        if init:
            self.init()
        for attempt in range(100):
            if attempt > 2:
                time.sleep(0.01)
            try:
                batches: dict[str, dict[str, str]] = {}
                lists, committed_at = {}, {}
                for name in sorted(os.listdir(self.batches)):
                    if name == SCHEMA_BATCH or name.startswith("."):
                        continue
                    d = self.batches / name
                    batches[name] = {f[:-8]: str(d / f) for f in os.listdir(d)
                                     if f.endswith(".parquet") and f[:-8] in SCHEMAS}
                    if name.startswith(COMPACTED):
                        lists[name], committed_at[name] = self._read_marker(name)
                return Snapshot(batches, lists, committed_at=committed_at)
            except (FileNotFoundError, NotADirectoryError):
                continue
        raise CatalogError(f"{self.batches}: batches keep vanishing while listed")

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
        elif self._committed(batch_id):  # folded by a compaction: append checks right before its commit
            return {}, batch_id
        return frames, batch_id

    def append(self, tables: Mapping[str, pl.DataFrame | Iterable[Mapping[str, Any]]],
               batch_id: str | None = None) -> str | None:
        """Write one batch of rows (several tables) atomically. Returns the batch id.

        With a ``batch_id`` (``own_batch_id``) the write is idempotent: when that batch exists
        already, nothing is written and None is returned."""
        self.init()
        deterministic = batch_id is not None
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
            if deterministic and batch_id in self._gone():  # recorded, folded and removed since has_batch
                return None
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
        """The views of catalog.duckdb (outside tools): globs over batches/, so they stay valid as batches
        come and go; rows of batches a compaction absorbed are left out by the marker rows of the compacted
        batch, within the same scan (``select_sql``)."""
        marker = _sql_str(str(self.batches / SCHEMA_BATCH / f"{ABSORBED}.parquet"))
        batch = "parse_filename(parse_dirpath(filename))"
        return [f"CREATE OR REPLACE VIEW {table} AS "
                + select_sql(table, f"[{_sql_str(str(self.batches / '*' / f'{table}.parquet'))}, {marker}]", batch)
                for table in SCHEMAS]

    def _sources(self, snap: Snapshot | None = None) -> dict[str, list[str]]:
        """table -> the local files of its visible batches (schema and marker files first)."""
        snap = snap or self._snapshot()
        head = [str(self.batches / SCHEMA_BATCH / f"{ABSORBED}.parquet")]
        return {t: [str(self.batches / SCHEMA_BATCH / f"{t}.parquet"), *head,
                    *(snap.batches[b][t] for b in snap.visible if t in snap.batches[b])] for t in SCHEMAS}

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(":memory:")

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
        """An in-memory DuckDB connection with every catalog table as a view over the files of the batches
        visible now (one listing; absorbed batches are not even opened)."""
        self.init()
        con = self._duckdb()
        for table, files in self._sources().items():
            con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS {select_sql(table, _file_list(files))}")
        return con

    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run SQL on the catalog. A file that vanishes under the query (a compaction removed the batches it
        absorbed after this query listed them) makes it list again, once: the new listing holds the
        compacted batch instead."""
        for attempt in (0, 1):
            try:
                con = self.connect()
                try:
                    return con.sql(sql, params=params or None).pl()
                finally:
                    con.close()
            except Exception as exc:
                if attempt or not _is_missing_file(exc):
                    raise
        raise AssertionError("unreachable")

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

    # ---- compaction ---------------------------------------------------------------------------
    def compact(self, dry_run: bool = False) -> dict[str, Any]:
        """Fold every visible batch into one compacted batch ``!c-<generation>`` and remove the batches it
        absorbed (DESIGN.md, "Module notes": ml/catalog.py). Every query answers as before. The compacted
        batch is committed create-only (local: a rename onto a new name; object store: its _commit.json),
        so of two compactors of one generation exactly one commits; a batch committed after this listing is
        neither absorbed nor removed. Returns what was (dry run: would be) done."""
        self.init()
        snap = self._snapshot()
        known = set(snap.batches) | snap.gone
        cid = compacted_id(1 + max((_generation(b) for b in known), default=0))
        out: dict[str, Any] = {"batch": cid, "fold": snap.visible, "leftovers": snap.absorbed_present(),
                               "status": "dry run" if dry_run else "committed", "removed": 0}
        expired = snap.expired(keep_absorbed_s())  # absorbed long enough ago: no reader can still need them
        if len(snap.visible) < 2:
            out.update(batch=None, status="nothing to compact")
            if not dry_run and expired:
                out["removed"] = self.remove_batches(expired, snap)
            return out
        if dry_run:
            return out
        absorbed = sorted(set(snap.batches) | {b for b in snap.gone if _remembered(b)})
        try:
            won = self._publish_compacted(cid, snap, absorbed)
        except Exception as exc:
            if not _is_missing_file(exc):
                raise
            out.update(status="lost: another compaction removed batches while this one read them")
            return out
        if not won:
            out.update(status="lost: another compaction committed this generation first")
            return out
        fault_point("catalog.compact_before_cleanup")
        # what this compaction absorbed stays for keep_absorbed_s(): a reader whose listing missed the new
        # compacted batch answers from them (the next compaction or gc removes them)
        out["removed"] = self.remove_batches(sorted(set(expired) | (set(snap.batches) if keep_absorbed_s() <= 0
                                                                    else set())), snap)
        return out

    def _write_compacted(self, sources: dict[str, list[str]], out: Path, absorbed: list[str]) -> None:
        """One Parquet file per table: the rows the views show over ``sources`` (version-owned tables already
        reduced to the first batch of each version), then one marker row per absorbed batch id."""
        con = self._duckdb()
        try:
            con.execute(f"CREATE TEMP TABLE _m AS SELECT unnest(?::VARCHAR[]) AS {ABSORBED}", [absorbed])
            for table, files in sources.items():
                con.execute(f"COPY (SELECT *, NULL::VARCHAR AS {ABSORBED} FROM ({select_sql(table, _file_list(files))}) "
                            f"UNION ALL BY NAME SELECT {ABSORBED} FROM _m) TO {_sql_str(str(out / f'{table}.parquet'))} "
                            f"(FORMAT parquet)")
        finally:
            con.close()

    def _publish_compacted(self, cid: str, snap: Snapshot, absorbed: list[str]) -> bool:
        staging = self.root / STAGING / f"{cid}~{os.getpid()}~{secrets.token_hex(4)}~{socket.gethostname()}"
        staging.mkdir(parents=True)
        try:
            self._write_compacted(self._sources(snap), staging, absorbed)
            (staging / ABSORBED_LIST).write_text(json.dumps({"absorbed": absorbed, "generation": _generation(cid),
                                                             "host": socket.gethostname(), "pid": os.getpid(),
                                                             "committed_at": time.time()}))
            for p in staging.iterdir():
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
            fsync_dir(staging)
            fault_point("catalog.compact_before_commit")
            try:
                os.rename(staging, self.batches / cid)
            except OSError as exc:  # another compactor committed this generation
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return False
                raise
            fsync_dir(self.batches)
            return True
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def remove_batches(self, batch_ids: list[str], snap: Snapshot | None = None) -> int:
        """Remove batches a committed compaction absorbed: each is renamed out of batches/ (it vanishes from
        every listing at once), then deleted; a compactor killed in between leaves ``catalog/_staging/``
        entries of a dead pid, which ``lineage gc`` removes. Returns how many were removed."""
        tag = f"{os.getpid()}~{secrets.token_hex(4)}~{socket.gethostname()}"
        (self.root / STAGING).mkdir(parents=True, exist_ok=True)
        moved = []
        half = len(batch_ids) // 2
        for i, b in enumerate(batch_ids):
            if i == half:
                fault_point("catalog.compact_during_cleanup")
            target = self.root / STAGING / f"{b}~{tag}"
            try:
                os.rename(self.batches / b, target)
            except FileNotFoundError:  # removed by another compactor or gc meanwhile
                continue
            moved.append(target)
        for target in moved:
            shutil.rmtree(target, ignore_errors=True)
        return len(moved)

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
_COMMIT_CACHE: dict[tuple[str, Any], dict] = {}


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

    def _marker_url(self):
        return self.batches / SCHEMA_BATCH / f"{ABSORBED}-{digest_json({ABSORBED: str(S)}, 8)}.parquet"

    def init(self) -> None:
        if self._ready:
            return
        import io

        want = {table: self._schema_url(table) for table in SCHEMAS}
        want[ABSORBED] = self._marker_url()
        sdir = self.batches / SCHEMA_BATCH
        from ml.storage import objects

        have = set(objects(sdir))
        for table, url in want.items():
            if url.key not in have:
                buf = io.BytesIO()
                pl.DataFrame(schema=SCHEMAS.get(table, {ABSORBED: S})).write_parquet(buf)
                self.fs.pipe_file(url.key, buf.getvalue())  # one PUT: whole or absent
        self._ready = True

    def has_batch(self, batch_id: str) -> bool:
        return self._committed(batch_id) or batch_id in self._gone()

    def _committed(self, batch_id: str) -> bool:
        return self.fs.exists((self.batches / batch_id / COMMIT).key)

    def _commits(self, keys: list[tuple[str, Any]]) -> dict[str, dict]:
        """Commit markers by key. One with an ETag (from a listing) is cached by key and ETag for this
        process: a compacted batch's marker never changes."""
        want = [k for k, etag in keys if etag is None or (k, etag) not in _COMMIT_CACHE]
        got = {k: json.loads(v) for k, v in self.fs.cat(want, on_error="omit").items()} if want else {}
        out = {}
        for key, etag in keys:
            if key in got:
                out[key] = got[key]
                if etag is not None:
                    _COMMIT_CACHE[(key, etag)] = got[key]
            elif (key, etag) in _COMMIT_CACHE:
                out[key] = _COMMIT_CACHE[(key, etag)]
        return out

    def _gone(self) -> frozenset[str]:
        """Every batch id a committed compacted batch absorbed. Listings are in key order and "!c-" sorts
        before every other batch id, so the listing stops at the first other batch: one page, whatever the
        number of batches. (A store listing out of order could only make this miss an absorbed id; a writer
        would then write a batch again that readers leave out by name.)"""
        import obstore

        from ml.storage import native_store

        bucket, _, prefix = self.batches.key.partition("/")
        keys = []
        for chunk in obstore.list(native_store(bucket), prefix + "/", chunk_size=1000):
            name = ""
            for meta in chunk:
                rel = meta["path"][len(prefix) + 1:]
                name = rel.split("/", 1)[0]
                if name.startswith(COMPACTED) and rel == f"{name}/{COMMIT}":
                    keys.append((f"{bucket}/{meta['path']}", meta.get("e_tag")))
                elif name > COMPACTED and not name.startswith(COMPACTED):
                    break
            if name > COMPACTED and not name.startswith(COMPACTED):
                break
        return frozenset().union(*(frozenset(c.get("absorbed", ())) for c in self._commits(keys).values()))

    def append(self, tables, batch_id: str | None = None) -> str | None:
        import io

        from ml.storage import create_only

        self.init()
        deterministic = batch_id is not None
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
        # another writer committed this batch first (or committed it and a compaction folded and removed it)
        if (deterministic and batch_id in self._gone()) or not create_only(bdir / COMMIT, commit):
            self.fs.rm(keys)
            return None
        return batch_id

    def _snapshot(self, init: bool = True) -> Snapshot:
        """One listing of catalog/batches/: the committed batches (the writer each _commit.json names) and
        the ids each committed compacted batch absorbed (from its _commit.json)."""
        from ml.storage import SCHEME, objects

        if init:
            self.init()
        listing = objects(self.batches)
        by_batch: dict[str, dict[str, list[str]]] = {}
        keys: dict[str, list[str]] = {}
        commits: dict[str, tuple[str, Any]] = {}
        for key, info in listing.items():
            parts = self.batches.relative(key).split("/")
            if parts[0] == SCHEMA_BATCH:
                continue
            keys.setdefault(parts[0], []).append(key)
            if len(parts) == 2 and parts[1] == COMMIT:
                commits[parts[0]] = (key, info.get("etag"))
            elif len(parts) == 3 and parts[2].endswith(".parquet"):
                by_batch.setdefault(parts[0], {}).setdefault(parts[1], []).append(key)
        committed: dict[str, str] = {}
        read = []  # several uploads under one batch id: the commit marker names the winner; compacted: its list
        for batch, (key, etag) in commits.items():
            writers = by_batch.get(batch, {})
            if batch.startswith(COMPACTED) or len(writers) > 1:
                read.append((key, etag))
            elif writers:
                committed[batch] = next(iter(writers))
        lists, committed_at = {}, {}
        for key, marker in self._commits(read).items():
            batch = self.batches.relative(key).split("/")[0]
            if marker.get("writer") in by_batch.get(batch, {}):
                committed[batch] = marker["writer"]
                if batch.startswith(COMPACTED):
                    lists[batch] = frozenset(marker.get("absorbed", ()))
                    committed_at[batch] = float(marker.get("committed_at", 0.0))
        batches = {}
        for batch, writer in committed.items():
            files = {}
            for key in by_batch[batch][writer]:
                table = key.rsplit("/", 1)[-1][: -len(".parquet")]
                if table in SCHEMAS:
                    files[table] = SCHEME + key
            batches[batch] = files
        return Snapshot(batches, lists, keys, committed_at)

    def committed_files(self, snap: Snapshot | None = None) -> dict[str, list[str]]:
        """table -> s3:// URLs of its Parquet files in the visible committed batches (the schema and marker
        files first); batches a compaction absorbed are left out (and never fetched)."""
        from ml.storage import SCHEME

        snap = snap or self._snapshot()
        return {t: [SCHEME + self._schema_url(t).key, SCHEME + self._marker_url().key,
                    *(snap.batches[b][t] for b in snap.visible if t in snap.batches[b])] for t in SCHEMAS}

    def _copies_root(self) -> Path:
        from ml.storage import home_scratch

        return home_scratch(self.home, "catalog")

    def read_copies(self, files: dict[str, list[str]]) -> dict[str, list[str]]:
        """table -> local read copies of its committed files, under ``<scratch>/catalog/<home digest>/``.
        A committed file never changes (its key names its writer's upload, a schema file its schema's
        digest), so each is fetched once per machine, complete or not at all (a temporary name, then a
        rename): a query costs one listing plus the new batches, not a GET of every batch ever written."""
        from ml.storage import SCHEME, download

        root = self._copies_root()
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

    def _sources(self, snap: Snapshot | None = None) -> dict[str, list[str]]:
        """table -> local read copies of its visible files; a batch removed by a compaction after this
        listing makes it list again, once (not when the caller passes its own listing: a compactor's
        output must hold exactly the batches it lists as absorbed)."""
        for attempt in (0, 1):
            try:
                return self.read_copies(self.committed_files(snap))
            except FileNotFoundError:
                if attempt or snap is not None:
                    raise
        raise AssertionError("unreachable")

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                  "autoload_known_extensions": False})

    def view_sql(self) -> list[str]:
        return [f"CREATE OR REPLACE VIEW {table} AS {select_sql(table, _file_list(files))}"
                for table, files in self._sources().items()]

    def ensure_views(self):
        """Nothing to refresh: on an object store there is no catalog.duckdb; ``connect``/``query``
        build the views over the committed batches each time. Returns the catalog's URL."""
        self.init()
        return self.root

    def _publish_compacted(self, cid: str, snap: Snapshot, absorbed: list[str]) -> bool:
        from ml.storage import create_only, scratch_dir

        writer = f"{os.getpid()}~{secrets.token_hex(4)}~{socket.gethostname()}"
        local = scratch_dir() / "staging" / f"catalog-compact~{writer}"  # lineage gc: scratch staging
        local.mkdir(parents=True)
        bdir = self.batches / cid
        keys = []
        try:
            self._write_compacted(self._sources(snap), local, absorbed)
            for p in sorted(local.iterdir()):
                key = (bdir / writer / p.name).key
                self.fs.pipe_file(key, p.read_bytes())  # one PUT each
                keys.append(key)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        fault_point("catalog.compact_before_commit")
        commit = json.dumps({"writer": writer, "tables": sorted(SCHEMAS), "host": socket.gethostname(),
                             "pid": os.getpid(), "committed_at": time.time(), "absorbed": absorbed,
                             "generation": _generation(cid)}).encode()
        if not create_only(bdir / COMMIT, commit):  # another compactor committed this generation
            self.fs.rm(keys)
            return False
        return True

    def remove_batches(self, batch_ids: list[str], snap: Snapshot | None = None) -> int:
        """Remove absorbed batches: each one's _commit.json first (from then on it is no batch to any
        listing), then its uploads; a compactor killed in between leaves uncommitted uploads of a dead
        writer, which ``lineage gc`` removes. Returns how many were removed."""
        snap = snap or self._snapshot()
        half = len(batch_ids) // 2
        for i, part in enumerate((batch_ids[:half], batch_ids[half:])):
            if i:
                fault_point("catalog.compact_during_cleanup")
            keys = [k for b in part for k in snap.keys.get(b, [])]
            for chunk in ([k for k in keys if k.endswith("/" + COMMIT)], [k for k in keys if not k.endswith("/" + COMMIT)]):
                if chunk:
                    self.fs.rm(chunk)
        for b in batch_ids:  # this machine's read copies of them (a reader that still lists them lists again)
            shutil.rmtree(self._copies_root() / (self.batches / b).key, ignore_errors=True)
        return len(batch_ids)
