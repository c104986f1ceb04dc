"""Catalog compaction (``lineage catalog compact``, ``Catalog.compact``) on a local and an ``s3://`` home.

What a user notices: every query answers exactly as before compaction (every table, version-owned
duplicates included), the folded batches are gone, an own batch stays recorded (no second write of a
version's rows), a batch written while the compactor runs is kept, a compactor killed at any moment
leaves the answers unchanged and ``lineage gc`` / the next compaction clean up, and of two compactors
racing exactly one commits. The s3 cases run against SeaweedFS (tests/servers.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import duckdb
import polars as pl
import pytest

from ml import faults
from ml.catalog import BATCHES, COMPACTED, SCHEMAS, STAGING, VERSION_OWNED, Catalog, own_batch_id
from ml.cli import main as lineage
from ml.fsutil import scoped_environ
from ml.gc import find_leftovers
from ml.storage import location
from tests.conftest import REPO
from tests.test_storage_s3 import s3  # noqa: F401  (the module's SeaweedFS server)

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
OWN = ("own_asset", "f" * 16)


def _value(dtype, i: int):
    if dtype == pl.String:
        return f"s{i}"
    if dtype == pl.Int64:
        return i
    if dtype == pl.Float64:
        return i * 0.5
    if dtype == pl.Boolean:
        return i % 2 == 0
    return T0 + timedelta(seconds=i)


def _rows(table: str, i: int, n: int = 2) -> list[dict]:
    rows = []
    for j in range(n):
        row = {c: _value(t, 10 * i + j) for c, t in SCHEMAS[table].items()}
        if "asset" in row and "data_version" in row:  # versions recur across batches: version-owned duplicates
            row["asset"], row["data_version"] = f"a{i % 2}", f"{i % 3:016x}"
        rows.append(row)
    if table == "quarantine":  # rows of no version are never deduplicated
        rows.append({"source": "landing.jsonl", "line": i, "reason": "bad json", "asset": None, "data_version": None})
    return rows


def _fill(cat: Catalog, n: int = 12) -> None:
    for i in range(n):
        assert cat.append({t: _rows(t, i) for t in SCHEMAS})
    own = {"dataset_stats": [{"asset": OWN[0], "data_version": OWN[1], "stat": "kept", "value": 7.0}],
           "asset_versions": [{"asset": OWN[0], "data_version": OWN[1], "created_at": T0}]}
    assert cat.append(own, batch_id=own_batch_id(*OWN))


def _results(home) -> dict[str, pl.DataFrame]:
    """Every table as Catalog.query answers it (sorted) and, locally, as catalog.duckdb answers it."""
    cat = Catalog(home)
    con = cat.connect()  # the views Catalog.query uses, built once for every table
    try:
        out = {t: con.sql(f"select * from {t}").pl().sort(list(SCHEMAS[t]), nulls_last=True) for t in SCHEMAS}
    finally:
        con.close()
    if cat.db_path is not None:
        cat.ensure_views()
        con = duckdb.connect(str(cat.db_path), read_only=True)
        try:
            for t in SCHEMAS:
                out["db:" + t] = con.sql(f"select * from {t}").pl().sort(list(SCHEMAS[t]), nulls_last=True)
        finally:
            con.close()
    return out


def _same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for t in a:
        assert a[t].schema == b[t].schema, t
        assert a[t].equals(b[t]), (t, a[t], b[t])


def _batch_ids(cat: Catalog) -> list[str]:
    snap = cat._snapshot()
    return sorted(snap.batches)


@pytest.fixture(autouse=True)
def _remove_at_once(monkeypatch):
    """Absorbed batches go at once here (the default keeps them 15 min: tested below)."""
    monkeypatch.setenv("LINEAGE_CATALOG_KEEP_S", "0")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def home(request, tmp_path):
    if request.param == "local":
        return tmp_path / "lh"
    return request.getfixturevalue("s3").url(f"compact-{uuid.uuid4().hex[:8]}")


def test_compaction_keeps_every_answer_and_the_own_batches_recorded(home, capsys):
    cat = Catalog(home)
    _fill(cat)
    before = _results(home)
    if cat.db_path is None:  # s3: the query fetched a read copy of each batch
        assert len(list((cat._copies_root() / cat.batches.key).iterdir())) == 13 + 1
    assert before["dataset_stats"].height < 12 * 2 + 1  # version-owned duplicates exist and are hidden
    assert lineage(["--home", str(home), "catalog", "compact", "--dry-run"]) == 0
    assert "would fold 13 batch(es) into !c-000001" in capsys.readouterr().out
    assert len(_batch_ids(cat)) == 13  # a dry run changes nothing
    assert lineage(["--home", str(home), "catalog", "compact"]) == 0
    assert "folded 13 batch(es) into !c-000001; removed 13" in capsys.readouterr().out
    assert _batch_ids(Catalog(home)) == [f"{COMPACTED}000001"]
    if cat.db_path is None:  # this machine's read copies of the removed batches went with them
        copies = cat._copies_root() / cat.batches.key
        assert {p.name for p in copies.iterdir()} <= {f"{COMPACTED}000001", "_schema"}
    _same(before, _results(home))
    # the own batch was absorbed and removed: still recorded, so the version's rows are not written again
    fresh = Catalog(home)
    assert fresh.has_batch(own_batch_id(*OWN)) and fresh.knows_version(*OWN)
    again = {"dataset_stats": [{"asset": OWN[0], "data_version": OWN[1], "stat": "kept", "value": 7.0}]}
    assert fresh.append(again, batch_id=own_batch_id(*OWN)) is None
    assert not fresh.has_batch(own_batch_id("own_asset", "e" * 16))
    # a later batch for a recorded version loses to the compacted rows, as it lost to the batches before
    late = {t: _rows(t, 0) for t in VERSION_OWNED}
    assert fresh.append(late)
    after_late = _results(home)
    for t in VERSION_OWNED:
        extra = 1 if t == "quarantine" else 0  # its row of no version counts
        assert after_late[t].height == before[t].height + extra, t
    # a writer that checked has_batch before the compaction removed the own batch: checked again just
    # before its commit, it writes nothing (None: the caller records its run in an ordinary batch) ...
    racing = Catalog(home)
    racing.has_batch = lambda batch_id: False
    again = {"dataset_stats": [{"asset": OWN[0], "data_version": OWN[1], "stat": "again", "value": 1.0}]}
    assert racing.append(again, batch_id=own_batch_id(*OWN)) is None
    racing._gone = lambda: frozenset()  # ... and should that check miss it too, its batch is left out by name
    assert racing.append(again, batch_id=own_batch_id(*OWN)) == own_batch_id(*OWN)
    _same(after_late, _results(home))
    # a second compaction absorbs the first, and the late batch
    assert Catalog(home).compact()["status"] == "committed"
    assert _batch_ids(Catalog(home)) == [f"{COMPACTED}000002"]
    _same(after_late, _results(home))
    assert Catalog(home).has_batch(own_batch_id(*OWN))
    assert Catalog(home).compact()["status"] == "nothing to compact"
    assert lineage(["--home", str(home), "gc"]) == 0
    assert "no leftovers of dead writers" in capsys.readouterr().out


def test_a_batch_written_while_the_compactor_runs_is_kept(home):
    cat = Catalog(home)
    _fill(cat, n=4)
    before = _results(home)
    real = cat._publish_compacted
    written = []

    def publish(cid, snap, absorbed):  # between the compactor's listing and its commit
        written.append(Catalog(home).append({"promotions": [{"component": "late", "bundle_version": "b"}]}))
        return real(cid, snap, absorbed)

    cat._publish_compacted = publish
    assert cat.compact()["status"] == "committed"
    assert written[0] in _batch_ids(Catalog(home))  # neither absorbed nor removed
    after = _results(home)
    assert after["promotions"].filter(pl.col("component") == "late").height == 1
    _same({t: df.filter(pl.col("component") != "late") if "promotions" in t else df for t, df in after.items()}, before)


COMPACTOR = """
import sys
sys.path.insert(0, {repo!r})
from ml.catalog import Catalog
print(Catalog(sys.argv[1]).compact()["status"])
"""


def _compactor(home, fault: str) -> subprocess.Popen:
    env = {**os.environ, faults.ENV: fault}
    return subprocess.Popen([sys.executable, "-c", COMPACTOR.format(repo=str(REPO)), str(home)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("point", ["catalog.compact_before_commit", "catalog.compact_before_cleanup",
                                   "catalog.compact_during_cleanup"])
def test_a_compactor_killed_at_any_moment_changes_no_answer_and_gc_or_the_next_compaction_cleans_up(home, point, capsys):
    cat = Catalog(home)
    _fill(cat, n=4)
    before = _results(home)
    proc = _compactor(home, f"{point}=kill")
    assert proc.wait(timeout=120) == -9, proc.stderr.read()
    _same(before, _results(home))
    kinds = sorted({x.kind for x in find_leftovers(location(str(home)))})
    expected = {"catalog.compact_before_commit": ["catalog upload" if cat.db_path is None else "catalog staging"],
                "catalog.compact_before_cleanup": ["absorbed batch"],
                "catalog.compact_during_cleanup": ["absorbed batch"] if cat.db_path is None
                else ["absorbed batch", "catalog staging"]}[point]
    assert kinds == expected
    assert Catalog(home).has_batch(own_batch_id(*OWN))
    if point == "catalog.compact_before_cleanup":  # the next compaction removes what the dead one absorbed
        out = Catalog(home).compact()
        assert out["status"] == "nothing to compact" and out["removed"] == 5
    else:
        assert lineage(["--home", str(home), "gc", "--apply"]) == 0
        assert "removed" in capsys.readouterr().out
        status = Catalog(home).compact()["status"]
        assert status == ("committed" if point == "catalog.compact_before_commit" else "nothing to compact")
    assert find_leftovers(location(str(home)), min_age_s=0) == []
    assert _batch_ids(Catalog(home)) == [f"{COMPACTED}000001"]
    _same(before, _results(home))
    assert Catalog(home).has_batch(own_batch_id(*OWN))


def test_two_racing_compactors_one_commits(home, tmp_path):
    cat = Catalog(home)
    _fill(cat, n=6)
    before = _results(home)
    barrier = tmp_path / "barrier"
    procs = [_compactor(home, f"catalog.compact_before_commit=barrier:{barrier}:2") for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    assert sorted(outs) == ["committed", "lost: another compaction committed this generation first"]
    assert _batch_ids(Catalog(home)) == [f"{COMPACTED}000001"]
    _same(before, _results(home))
    assert find_leftovers(location(str(home)), min_age_s=0) == []
    if cat.db_path is not None:
        assert list((cat.root / STAGING).iterdir()) == []
        assert sorted(os.listdir(cat.root / BATCHES)) == [f"{COMPACTED}000001", "_schema"]


def test_a_reader_that_listed_before_the_commit_answers_after_the_removal(home, tmp_path, monkeypatch):
    """The reader's listing predates the commit, its read follows the removal of the folded batches (whose
    files it was about to open, or fetch: a fresh scratch space): it lists again, once, and answers."""
    cat = Catalog(home)
    _fill(cat, n=4)
    before = _results(home)
    monkeypatch.setenv("LINEAGE_SCRATCH", str(tmp_path / "fresh-scratch"))  # s3: nothing fetched yet
    reader = Catalog(home)
    real = reader._snapshot
    listings = []

    def snapshot():
        snap = real()
        if not listings:  # the first listing: then a compaction (another machine) commits and removes it all
            with scoped_environ({"LINEAGE_SCRATCH": str(tmp_path / "compactor-scratch")}):
                assert Catalog(home).compact()["status"] == "committed"
        listings.append(snap)
        return snap

    reader._snapshot = snapshot
    assert reader.query("select count(*) from dataset_stats").item() == before["dataset_stats"].height
    assert len(listings) == 2  # listed again once
    _same(before, _results(home))


def test_a_compactor_overtaken_by_another_reports_lost_and_changes_nothing(home, tmp_path):
    """Another compaction commits and removes the batches while this one reads them: this one commits
    nothing (local: its files vanished; s3: the generation is taken) and every answer holds."""
    cat = Catalog(home)
    _fill(cat, n=4)
    before = _results(home)
    real = cat._write_compacted

    def write(sources, out, absorbed):
        with scoped_environ({"LINEAGE_SCRATCH": str(tmp_path / "other-scratch")}):
            assert Catalog(home).compact()["status"] == "committed"
        return real(sources, out, absorbed)

    cat._write_compacted = write
    assert cat.compact()["status"].startswith("lost: another compaction")
    assert _batch_ids(Catalog(home)) == [f"{COMPACTED}000001"]
    _same(before, _results(home))
    assert find_leftovers(location(str(home)), min_age_s=0) == []


@pytest.mark.slow
def test_a_materialization_after_compaction_writes_no_own_rows_again(tmp_path, monkeypatch):
    """raw_docs materialized, the catalog compacted (its own batch folded and removed), then materialized
    again (a cache hit): one more asset_versions row, its quarantine and stats rows still once. (Had the
    run taken the folded own batch for missing, it would write that batch again, which readers leave out
    by name: its asset_versions row would be missing.)"""
    from tests.test_faults import LINES, QUARANTINED, _counts, _materialize, _n_stats
    from tests.conftest import write_lines

    home = tmp_path / "lh"
    write_lines(home / "landing" / "a.jsonl", LINES)
    monkeypatch.setenv("LINEAGE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    assert _materialize().success and _materialize().success  # the own batch, then a cache hit's batch
    twice = {"asset_versions": 2, "quarantine": QUARANTINED, "dataset_stats": _n_stats(home)}
    assert _counts(home) == twice
    assert Catalog(home).compact()["status"] == "committed"
    assert _batch_ids(Catalog(home)) == [f"{COMPACTED}000001"]
    run = _materialize()
    assert run.asset_materializations_for_node("raw_docs")[0].metadata["cache_hit"].value is True
    assert _counts(home) == {**twice, "asset_versions": 3}


def test_absorbed_batches_stay_until_no_reader_can_still_need_them(home, monkeypatch):
    """A listing is not atomic: a reader whose listing began before the commit may miss the compacted
    batch. Absorbed batches therefore stay for LINEAGE_CATALOG_KEEP_S after the commit, so such a reader
    (here: a listing taken before the commit, read after it) answers completely from them; queries leave
    them out at once; gc and the next compaction remove them once the time is up, not before."""
    monkeypatch.setenv("LINEAGE_CATALOG_KEEP_S", "3600")
    cat = Catalog(home)
    _fill(cat, n=6)
    before = _results(home)
    stale = Catalog(home)._snapshot()  # a reader's listing from before the commit
    out = Catalog(home).compact()
    assert out["status"] == "committed" and out["removed"] == 0
    _same(before, _results(home))
    reader = Catalog(home)
    con = reader._duckdb()
    sources = reader.committed_files(stale) if reader.db_path is None else reader._sources(stale)
    if reader.db_path is None:
        sources = reader.read_copies(sources)
    from ml.catalog import _file_list, select_sql

    stale_rows = con.sql(f"select count(*) from ({select_sql('asset_versions', _file_list(sources['asset_versions']))})")
    assert stale_rows.fetchall()[0][0] == before["asset_versions"].height  # every row, none twice
    assert find_leftovers(location(str(home)), min_age_s=0) == []  # not yet expired: no leftover
    assert Catalog(home).compact()["removed"] == 0
    monkeypatch.setenv("LINEAGE_CATALOG_KEEP_S", "0")  # the time is up
    assert sorted({x.kind for x in find_leftovers(location(str(home)), min_age_s=0)}) == ["absorbed batch"]
    assert Catalog(home).compact()["removed"] == len(stale.batches)
    _same(before, _results(home))


def test_gc_dry_run_on_a_home_without_a_catalog_creates_nothing(home, s3):
    find_leftovers(location(str(home)), min_age_s=0)
    if str(home).startswith("s3://"):
        assert s3.client().find(str(home).removeprefix("s3://")) == []
    else:
        assert not os.path.exists(home)
