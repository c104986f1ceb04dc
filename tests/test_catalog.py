import multiprocessing as mp
from pathlib import Path

import duckdb
import pytest

from ml.catalog import SCHEMAS, Catalog, CatalogError, now_utc

BATCHES = 150


def _writer(home: str, writer: int, start) -> None:
    cat = Catalog(Path(home))
    start.wait()
    for i in range(BATCHES):
        v = f"{writer:08x}{i:08x}"
        cat.append({
            "asset_versions": [{"asset": "a", "data_version": v, "code_version": "c", "fingerprint": v,
                                "run_id": f"w{writer}", "created_at": now_utc(), "path": "/x", "bytes": 1,
                                "rows": i, "cache_hit": False}],
            "lineage_edges": [{"asset": "a", "data_version": v, "upstream_asset": "u",
                               "upstream_version": "0" * 16}],
            "dataset_stats": [{"asset": "a", "data_version": v, "stat": f"s{k}", "value": k} for k in range(3)],
        })


def test_every_table_exists_empty_and_typed(tmp_path):
    cat = Catalog(tmp_path)
    for table, schema in SCHEMAS.items():
        df = cat.table(table)
        assert df.height == 0
        assert df.columns == list(schema), table


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, start)) for w in range(2)]
    for p in procs:
        p.start()
    start.wait()
    # a reader in this process queries while the writers write: never an error, never a torn batch
    cat = Catalog(tmp_path)
    seen = 0
    while any(p.is_alive() for p in procs):
        n_versions = cat.query("SELECT count(*) FROM asset_versions").item()
        n_stats = cat.query("SELECT count(*) FROM dataset_stats").item()
        assert n_stats >= 3 * n_versions  # a batch's tables appear together
        seen = max(seen, n_versions)
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert cat.query("SELECT count(*) FROM asset_versions").item() == 2 * BATCHES
    assert cat.query("SELECT count(DISTINCT data_version) FROM lineage_edges").item() == 2 * BATCHES
    assert cat.query("SELECT count(*) FROM dataset_stats").item() == 2 * BATCHES * 3
    assert cat.query("SELECT run_id, count(*) n FROM asset_versions GROUP BY 1 ORDER BY 1").rows() == [
        ("w0", BATCHES), ("w1", BATCHES)]
    assert not list((tmp_path / "catalog" / "_staging").iterdir())


def test_catalog_duckdb_file_has_views_for_outside_tools(tmp_path):
    cat = Catalog(tmp_path)
    cat.append({"quarantine": [{"source": "f.jsonl", "line": 3, "reason": "invalid_json", "excerpt": "{",
                                "run_id": "r"}]})
    db = cat.ensure_views()
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.sql("SELECT source, line, reason FROM quarantine").fetchall() == [("f.jsonl", 3, "invalid_json")]
        assert {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()} >= set(SCHEMAS)
    finally:
        con.close()
    # rows appended later show up through the same file without recreating anything
    cat.append({"quarantine": [{"source": "g.jsonl", "line": 1, "reason": "blank_line", "excerpt": "",
                                "run_id": "r"}]})
    assert cat.ensure_views() == db
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM quarantine").fetchall() == [(2,)]
    finally:
        con.close()


def test_bad_rows_are_refused_with_a_clear_error(tmp_path):
    cat = Catalog(tmp_path)
    with pytest.raises(CatalogError, match="unknown catalog table"):
        cat.append({"nope": [{"a": 1}]})
    with pytest.raises(CatalogError, match="unknown columns"):
        cat.append({"dataset_stats": [{"asset": "a", "data_version": "v", "stat": "s", "value": 1, "typo": 2}]})
    assert cat.table("dataset_stats").height == 0


def test_trace_walks_lineage_up_and_down_at_version_level(tmp_path):
    cat = Catalog(tmp_path)
    t = now_utc()

    def version(asset, v, ups):
        cat.append({
            "asset_versions": [{"asset": asset, "data_version": v, "run_id": "r", "created_at": t, "cache_hit": False}],
            "lineage_edges": [{"asset": asset, "data_version": v, "upstream_asset": ua, "upstream_version": uv}
                              for ua, uv in ups],
        })

    raw1, raw2, chunks1, chunks2, tok = "1" * 16, "2" * 16, "3" * 16, "4" * 16, "5" * 16
    version("raw_docs", raw1, [("landing:a.jsonl", "a" * 16)])
    version("raw_docs", raw2, [("landing:b.jsonl", "b" * 16)])
    version("cleaned_chunks", chunks1, [("raw_docs", raw1)])
    version("cleaned_chunks", chunks2, [("raw_docs", raw2)])
    version("tokenizer", tok, [("cleaned_chunks", chunks1)])
    tree = cat.trace("cleaned_chunks", chunks1)
    assert [(n["asset"], n["data_version"]) for n in tree["upstream"]] == [("raw_docs", raw1)]
    assert tree["upstream"][0]["children"][0]["asset"] == "landing:a.jsonl"
    assert [(n["asset"], n["data_version"]) for n in tree["downstream"]] == [("tokenizer", tok)]
    # the other version of the same asset has another history
    other = cat.trace("cleaned_chunks", chunks2[:6])  # unambiguous prefix
    assert other["data_version"] == chunks2 and other["downstream"] == []
    with pytest.raises(CatalogError):
        cat.trace("cleaned_chunks", "9" * 16)
