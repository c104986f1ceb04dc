"""Storage by URL (issue 16) against a real S3 gateway (SeaweedFS, started by tests/servers.py).

What a user of an ``s3://bucket/prefix`` home sees: versions round-trip through the bucket and are
verified on read; a writer killed in the middle of a publish leaves no visible version and a rerun
completes; two writers of the same content converge on one version; ``lineage gc`` lists, then
removes, a dead writer's leftovers; the README's lineage SQL runs through the object-store catalog;
the landing zone lists objects under the same safety rules as files.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import polars as pl
import pytest

from ml import faults
from ml.catalog import Catalog, now_utc, own_batch_id
from ml.cli import main as lineage
from ml.fsutil import scoped_environ
from ml.store import MANIFEST, ArtifactStore, BuildResult, CorruptVersionError, ObjectArtifactStore
from tests.conftest import REPO
from tests.servers import seaweedfs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("scratch")
    with seaweedfs() as server, scoped_environ({**server.env(), "LINEAGE_SCRATCH": str(scratch),
                                                "LINEAGE_HOME": None}):  # every call below names its home
        yield server


def _build(text: str, n: int = 12, run_record: bool = False):
    def build(out):
        if run_record:  # run facts (ml/run_record.py): differ between writers of equal content
            (out / "_run").mkdir()
            (out / "_run" / "facts.json").write_text(json.dumps({"pid": os.getpid(), "at": time.time()}))
        for i in range(n):
            (out / "parts" / f"part-{i:02d}.txt").parent.mkdir(exist_ok=True)
            (out / "parts" / f"part-{i:02d}.txt").write_text(f"{text} {i}\n" * 50)
        (out / "big.bin").write_bytes(text.encode() * 100_000)
        return BuildResult(stats={"n": n}, rows=n)

    return build


def _put(store, text, fp):
    return store.put("thing", _build(text), fingerprint=fp, code_version="c1", config={"k": 1},
                     upstream={"up": "0" * 16}, run_id="run-1")


WRITER = """
import json, sys
sys.path.insert(0, {repo!r})
from tests.test_storage_s3 import _build
from ml.store import ArtifactStore
home, text, fp = sys.argv[1:4]
v = ArtifactStore(home).put("thing", _build(text, run_record=True), fingerprint=fp, code_version="c1", config={{}},
                           upstream={{}})
print(json.dumps({{"version": v.data_version, "reused": v.reused_content}}))
"""


def _writer(home: str, text: str, fp: str, fault: str = "") -> subprocess.Popen:
    env = {**os.environ, faults.ENV: fault} if fault else dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", WRITER.format(repo=str(REPO)), home, text, fp], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _objects(s3, url) -> list[str]:
    from ml.storage import StorageUrl, objects

    return sorted(objects(StorageUrl(str(url))))  # one listing of every object key under url


def test_put_open_lookup_round_trip_verified_on_read(s3, tmp_path, monkeypatch):
    home = s3.url("roundtrip")
    store = ArtifactStore(home)
    assert isinstance(store, ObjectArtifactStore)
    v = _put(store, "hello", "a" * 16)
    assert not v.reused_content and str(v.location) == f"{home}/artifacts/thing/{v.data_version}"
    keys = _objects(s3, v.location)
    assert f"{v.location.key}/{MANIFEST}" in keys and len(keys) == 12 + 1 + 1  # parts, big.bin, manifest

    other = ArtifactStore(home)  # another process's view: nothing local but scratch
    hit = other.lookup("thing", "a" * 16)
    assert hit.cache_hit and hit.data_version == v.data_version
    assert (hit.path / "parts" / "part-03.txt").read_text() == "hello 3\n" * 50
    assert (hit.path / "big.bin").stat().st_size == 500_000
    assert [x.data_version for x in other.versions("thing")] == [v.data_version] and other.assets() == ["thing"]
    assert other.lookup("thing", "b" * 16) is None

    # a damaged local read copy is fetched again, not reported as a corrupt version
    (hit.path / "big.bin").chmod(0o644)
    (hit.path / "big.bin").write_bytes(b"x")
    again = ArtifactStore(home).open("thing", v.data_version)
    assert (again.path / "big.bin").stat().st_size == 500_000

    # a changed object in the bucket is caught when read (here: by a worker with its own scratch space),
    # named with both digests, and quarantined
    fs = s3.client()
    fs.pipe_file(f"{v.location.key}/parts/part-00.txt", b"X" * 400)  # same size, other bytes
    assert ArtifactStore(home).verify("thing", v.data_version)[0]["path"] == "parts/part-00.txt"
    monkeypatch.setenv("LINEAGE_SCRATCH", str(tmp_path / "other-worker"))
    fresh = ArtifactStore(home)
    with pytest.raises(CorruptVersionError) as err:
        fresh.open("thing", v.data_version)
    assert err.value.problems[0]["path"] == "parts/part-00.txt" and err.value.problems[0]["actual_sha256"]
    moved = fresh.quarantine("thing", v.data_version)
    assert fresh.versions("thing") == [] and fresh.lookup("thing", "a" * 16) is None
    assert fresh.corrupt_versions() == [moved]
    rebuilt = _put(fresh, "hello", "a" * 16)  # the next build publishes a fresh copy
    assert rebuilt.data_version == v.data_version and ArtifactStore(home).verify("thing", v.data_version) == []
    # an object gone from the bucket is named as missing
    fs.rm_file(f"{v.location.key}/big.bin")
    monkeypatch.setenv("LINEAGE_SCRATCH", str(tmp_path / "third-worker"))
    with pytest.raises(CorruptVersionError, match="big.bin: listed in the manifest but missing"):
        ArtifactStore(home).open("thing", v.data_version)


def test_writer_killed_mid_publish_leaves_no_version_gc_removes_its_leftovers_rerun_completes(s3, capsys):
    home = s3.url("crash")
    proc = _writer(home, "crash", "c" * 16, "store.during_upload=kill")
    proc.communicate(timeout=60)
    assert proc.returncode == -9
    store = ArtifactStore(home)
    partial = _objects(s3, store.root / "thing")
    assert partial and not any(k.endswith(MANIFEST) for k in partial)  # some files, no manifest
    assert store.versions("thing") == [] and store.lookup("thing", "c" * 16) is None

    assert lineage(["--home", home, "gc"]) == 0
    out = capsys.readouterr().out
    assert "would remove upload lease" in out and "would remove partial upload" in out and "is dead" in out
    assert _objects(s3, store.root / "thing") == partial  # a dry run removes nothing

    assert lineage(["--home", home, "gc", "--apply"]) == 0
    assert "removed partial upload" in capsys.readouterr().out
    assert _objects(s3, store.root / "thing") == [] and _objects(s3, store.root / "_leases") == []
    assert lineage(["--home", home, "gc"]) == 0
    assert "no leftovers of dead writers" in capsys.readouterr().out

    proc = _writer(home, "crash", "c" * 16)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    version = json.loads(out)["version"]
    assert [v.data_version for v in ArtifactStore(home).versions("thing")] == [version]
    assert lineage(["--home", home, "verify", "--all"]) == 0
    assert "1 version(s) checked, 0 corrupt" in capsys.readouterr().out


def test_two_writers_of_the_same_content_converge_on_one_version(s3, tmp_path):
    home = s3.url("race")
    fault = f"store.before_publish=barrier:{tmp_path / 'barrier'}:2"  # both uploaded, neither manifest written
    procs = [_writer(home, "same", fp, fault) for fp in ("d" * 16, "e" * 16)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["version"] == results[1]["version"]
    assert sorted(r["reused"] for r in results) == [False, True]  # one manifest won, the other writer reused it
    store = ArtifactStore(home)
    assert [v.data_version for v in store.versions("thing")] == [results[0]["version"]]
    assert store.lookup("thing", "d" * 16).data_version == store.lookup("thing", "e" * 16).data_version
    # each wrote its own run record under the same key: the manifest that won lists the bytes in the bucket
    assert store.verify("thing", results[0]["version"]) == [] and _objects(s3, store.root / "_leases") == []
    assert any(f["path"] == "_run/facts.json" for f in store.get("thing", results[0]["version"]).manifest["files"])


README_LINEAGE_SQL = (  # README, "lineage stats": which raw_docs versions each bundle was built from
    "with recursive up(bundle, asset, data_version) as (select data_version, asset, data_version from asset_versions "
    "where asset = 'onnx_bundle' union select up.bundle, e.upstream_asset, e.upstream_version from up join "
    "lineage_edges e on e.asset = up.asset and e.data_version = up.data_version) select distinct bundle, "
    "data_version as raw_docs_version from up where asset = 'raw_docs' order by 1, 2")


def test_catalog_on_the_bucket_answers_the_readme_lineage_sql_and_trace(s3, capsys):
    home = s3.url("catalog")
    cat = Catalog(home)
    chain = [("raw_docs", "1" * 16), ("cleaned_chunks", "2" * 16), ("tokenized_corpus", "3" * 16),
             ("lm_checkpoint", "4" * 16), ("onnx_bundle", "5" * 16)]
    for i, (asset, version) in enumerate(chain):
        rows = {"asset_versions": [{"asset": asset, "data_version": version, "run_id": "r", "created_at": now_utc(),
                                    "path": f"{home}/artifacts/{asset}/{version}", "cache_hit": False}]}
        if i:
            rows["lineage_edges"] = [{"asset": asset, "data_version": version, "upstream_asset": chain[i - 1][0],
                                      "upstream_version": chain[i - 1][1], "run_id": "r", "created_at": now_utc()}]
        assert cat.append(rows)
    own = {"dataset_stats": [{"asset": "raw_docs", "data_version": "1" * 16, "stat": "kept", "value": 7.0}]}
    assert cat.append(own, batch_id=own_batch_id("raw_docs", "1" * 16))
    assert cat.append(own, batch_id=own_batch_id("raw_docs", "1" * 16)) is None  # idempotent: rows exactly once

    assert lineage(["--home", home, "stats", README_LINEAGE_SQL, "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"{'5' * 16},{'1' * 16}"
    assert Catalog(home).query("select sum(value) from dataset_stats").item() == 7.0
    assert lineage(["--home", home, "trace", "onnx_bundle"]) == 0
    assert "raw_docs@" + "1" * 8 in capsys.readouterr().out.replace("1" * 16, "1" * 8)
    # nothing of the catalog is local: no catalog.duckdb, and DuckDB loaded no extension (no network)
    con = Catalog(home).connect()
    assert con.sql("select count(*) from duckdb_extensions() where loaded and extension_name = 'httpfs'").fetchall() == [(0,)]


def test_catalog_queries_fetch_each_committed_batch_once(s3, tmp_path, monkeypatch):
    """A query reads local copies of the committed batches: the next query after one new batch fetches
    that batch's files and nothing else, and answers with every batch's rows."""
    import ml.storage as storage

    monkeypatch.setenv("LINEAGE_SCRATCH", str(tmp_path / "scratch"))
    fetched: list[str] = []
    real = storage.download
    monkeypatch.setattr(storage, "download", lambda keys, paths, **kw: (fetched.extend(keys), real(keys, paths, **kw)))
    home = s3.url("catalog-copies")
    cat = Catalog(home)
    for i in range(3):
        cat.append({"dataset_stats": [{"asset": "a", "data_version": f"{i}" * 16, "stat": "kept", "value": 1.0}]})
    assert cat.query("select count(*) from dataset_stats").item() == 3
    first = list(fetched)
    assert len([k for k in first if "/_schema/" not in k]) == 3  # the three batches (plus the schema files)
    fetched.clear()
    assert cat.query("select count(*) from dataset_stats").item() == 3
    assert fetched == []  # nothing new: nothing fetched
    batch = cat.append({"dataset_stats": [{"asset": "a", "data_version": "9" * 16, "stat": "kept", "value": 2.0}]})
    assert Catalog(home).query("select sum(value) from dataset_stats").item() == 5.0
    assert len(fetched) == 1 and f"/{batch}/" in fetched[0], fetched
    assert not list((tmp_path / "scratch").rglob("*.part"))


CATALOG_WRITER = """
import sys
sys.path.insert(0, {repo!r})
from ml.catalog import Catalog, now_utc
Catalog(sys.argv[1]).append({{"asset_versions": [{{"asset": "a", "data_version": "6" * 16, "created_at": now_utc()}}],
                             "lineage_edges": [{{"asset": "a", "data_version": "6" * 16, "upstream_asset": "b",
                                                "upstream_version": "7" * 16}}]}})
"""


def test_catalog_batch_killed_before_commit_is_invisible_and_gc_removes_it(s3, capsys):
    home = s3.url("catalog-crash")
    env = {**os.environ, faults.ENV: "catalog.before_rename=kill"}
    proc = subprocess.run([sys.executable, "-c", CATALOG_WRITER.format(repo=str(REPO)), home], cwd=REPO, env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == -9
    cat = Catalog(home)
    assert cat.query("select count(*) from asset_versions").item() == 0
    assert cat.query("select count(*) from lineage_edges").item() == 0  # neither table: all or nothing
    assert lineage(["--home", home, "gc", "--apply"]) == 0
    assert "removed catalog upload" in capsys.readouterr().out
    assert [k for k in _objects(s3, cat.batches) if "/_schema/" not in k] == []


BAD = "bad\ufffdname.jsonl"  # how the client lists a key with a control character


def test_landing_zone_on_the_bucket_lists_objects_with_the_same_rules(s3, tmp_path):
    from ml.raw_docs import MARKERS, ingest, read_docs, read_quarantine, scan_landing, visible_files

    landing = s3.url("landing-home") + "/landing"
    fs = s3.client()
    key = landing[len("s3://"):]
    doc = lambda i: json.dumps({"title": f"t{i}", "content": f"document {i} " * 5, "url": f"https://e.org/{i}"})
    fs.pipe_file(f"{key}/a.jsonl", ("\n".join([doc(0), doc(1), "{broken"]) + "\n").encode())
    fs.pipe_file(f"{key}/sub/b.jsonl.gz", gzip.compress((doc(2) + "\n").encode()))
    fs.pipe_file(f"{key}/.writer-tmp.jsonl", (doc(3) + "\n").encode())  # hidden: a writer in progress
    fs.pipe_file(f"{key}/notes.txt", b"not a landing file")
    fs.pipe_file(f"{key}/broken.jsonl.gz", b"not gzip at all")  # unreadable object
    fs.pipe_file(f"{key}/dir.jsonl/inner.txt", b"x")  # a prefix with a landing name
    import boto3  # another tool's upload: obstore itself refuses to write such a key

    boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key,
                 region_name=s3.region).put_object(Bucket=s3.bucket, Key=f"{key.split('/', 1)[1]}/bad\x07name.jsonl",
                                                   Body=(doc(4) + "\n").encode())  # no safe relative path

    assert [rel for rel, _ in visible_files(landing)] == ["a.jsonl", "broken.jsonl.gz", "dir.jsonl/inner.txt",
                                                           "notes.txt", "sub/b.jsonl.gz"]
    files = scan_landing(landing)
    by = {f.relpath: f for f in files}
    assert sorted(by) == ["a.jsonl", BAD, "broken.jsonl.gz", "dir.jsonl", "sub/b.jsonl.gz"]
    assert by["a.jsonl"].size == len(fs.cat_file(f"{key}/a.jsonl")) and len(by["a.jsonl"].sha256) == 64
    assert by["dir.jsonl"].problem == "not_regular_file" and by["dir.jsonl"].sha256 == MARKERS["not_regular_file"]
    assert by[BAD].problem == "unreadable_file" and "safe relative path" in by[BAD].detail

    report = ingest(files, tmp_path / "out")
    assert report.kept == 3 and report.lines_read == report.kept + report.quarantined
    q = read_quarantine(tmp_path / "out").collect()
    reasons = dict(zip(q["source"], q["reason"]))
    assert reasons["a.jsonl"] == "truncated_line" or reasons["a.jsonl"] == "invalid_json"
    assert reasons["broken.jsonl.gz"] == "unreadable_file" and reasons["dir.jsonl"] == "not_regular_file"
    assert reasons[BAD] == "unreadable_file"
    assert read_docs(tmp_path / "out").collect().height == 3


def test_landing_scan_on_the_bucket_remembers_digests_and_slices_as_a_local_one(s3, tmp_path, monkeypatch):
    """An unchanged object (same size, last-modified time and ETag) is not read again by the next
    scan; a replaced one is. A large object is cut into slices whose ingest equals the whole
    object's: every document, line number and quarantine row."""
    import hashlib

    import ml.raw_docs as rd

    landing = s3.url("landing-scan") + "/landing"
    fs, key = s3.client(), landing[len("s3://"):]
    doc = lambda i: json.dumps({"title": f"t{i}", "content": f"document {i} about topic {i % 7} " * 4,
                                "url": f"https://e.org/{i}"})
    lines = [doc(i) for i in range(120)]
    lines.insert(40, "{not json")
    big = ("\n".join(lines) + "\n").encode()
    fs.pipe_file(f"{key}/big.jsonl", big)
    fs.pipe_file(f"{key}/small.jsonl", (doc(500) + "\n").encode())
    digests = tmp_path / "cache" / "landing_digests.json"
    files = rd.scan_landing(landing, digests)
    assert {f.relpath: f.sha256 for f in files}["big.jsonl"] == hashlib.sha256(big).hexdigest()
    with monkeypatch.context() as mp:  # nothing changed: a listing, no read
        mp.setattr(rd, "open_landing", lambda *a: pytest.fail("an unchanged object was read again"))
        assert rd.scan_landing(landing, digests) == files
    fs.pipe_file(f"{key}/small.jsonl", (doc(501) + "\n").encode())  # replaced (same size)
    again = {f.relpath: f for f in rd.scan_landing(landing, digests)}
    assert again["small.jsonl"].sha256 == hashlib.sha256((doc(501) + "\n").encode()).hexdigest()
    assert again["big.jsonl"].sha256 == files[0].sha256

    cuts = tmp_path / "cache" / "slice_cuts.json"
    slices = [f for f in rd.slice_files(list(again.values()), len(big) // 5, cuts) if f.relpath == "big.jsonl"]
    assert len(slices) >= 4 and sum(f.size for f in slices) == len(big)
    assert [f.offset for f in slices][1:] == [f.offset + f.size for f in slices][:-1]
    whole = rd.ingest([again["big.jsonl"]], tmp_path / "whole")
    sliced = [rd.ingest([f], tmp_path / f"slice-{i}") for i, f in enumerate(slices)]
    assert sum(r.kept for r in sliced) == whole.kept == 120 and sum(r.quarantined for r in sliced) == 1
    cols = ["doc_id", "line", "title"]
    parts = pl.concat([rd.read_docs(tmp_path / f"slice-{i}").collect().select(cols) for i in range(len(slices))])
    assert parts.sort("line").equals(rd.read_docs(tmp_path / "whole").collect().select(cols).sort("line"))
    bad = pl.concat([rd.read_quarantine(tmp_path / f"slice-{i}").collect() for i in range(len(slices))])
    assert bad["line"].to_list() == [41]


def _checkpoint(work, step: int, text: str):
    d = work / "checkpoints" / f"step-{step:08d}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(text.encode() * 1000)
    (d / "state.json").write_text(json.dumps({"step": step, "best": {"step": step}}))
    return d


def test_training_resume_state_is_pushed_to_the_bucket_and_pulled_by_another_worker(s3, tmp_path, monkeypatch):
    from ml.storage_work import WorkState

    home = s3.url("work")
    monkeypatch.setenv("LINEAGE_SCRATCH", str(tmp_path / "worker-a"))
    a = WorkState(home, "lm_checkpoint", "f" * 16)
    assert a.remote and a.local.is_relative_to(tmp_path / "worker-a")
    with a.syncing(interval_s=0.05) as work:
        _checkpoint(work, 10, "ten")
        _checkpoint(work, 20, "twenty")
        (work / "checkpoints" / ".tmp-step-00000030").mkdir()  # a save in progress: never pushed
    stored = _objects(s3, a.url)
    assert f"{a.url.key}/checkpoints/step-00000020/state.json" in stored
    assert not any("tmp-step" in k for k in stored)
    # a worker killed mid-push leaves a checkpoint without state.json: it is never pulled
    s3.client().pipe_file(f"{a.url.key}/checkpoints/step-00000040/model.safetensors", b"half")

    monkeypatch.setenv("LINEAGE_SCRATCH", str(tmp_path / "worker-b"))
    b = WorkState(home, "lm_checkpoint", "f" * 16)
    assert b.pull() == ["step-00000010", "step-00000020"]
    assert (b.local / "checkpoints" / "step-00000020" / "model.safetensors").read_bytes() == b"twenty" * 1000
    # pruning on b (keep the last) removes the dropped checkpoint from the bucket too
    import shutil

    shutil.rmtree(b.local / "checkpoints" / "step-00000010")
    b.push()
    assert not any("step-00000010" in k for k in _objects(s3, b.url))

    # a local home is the work directory itself, as before
    local = WorkState(tmp_path / "lh", "lm_checkpoint", "f" * 16)
    assert local.local == tmp_path / "lh" / "work" / "lm_checkpoint" / ("f" * 16) and local.push() == []


def test_parse_cache_shards_live_in_the_bucket(s3):
    from ml.relation_triples.base import Triple
    from ml.relation_triples.cache import TripleCache

    root = s3.url("parse-cache") + "/work/relation_triples/cache"
    cache = TripleCache(root, "simple", "1.0")
    cache.put_many({"a" * 16: [Triple("Ada", "born_in", "London", 0.9, 0, 20)], "b" * 16: []})
    cache.put_many({"c" * 16: [Triple("Bob", "works_for", "Acme", 0.8, 3, 9)]})
    other = TripleCache(root, "simple", "1.0")  # another worker
    got = other.get_many(["a" * 16, "b" * 16, "c" * 16, "d" * 16])
    assert got == {"a" * 16: [Triple("Ada", "born_in", "London", 0.9, 0, 20)], "b" * 16: [],
                   "c" * 16: [Triple("Bob", "works_for", "Acme", 0.8, 3, 9)]}
    assert len(other.shards()) == 2 and other.compact() == 2 and len(other.shards()) == 1 and len(other) == 3


def test_sample_corpus_lands_in_the_bucket(s3, capsys, monkeypatch):
    import ml.sample_corpus
    from ml.raw_docs import scan_landing

    def small_corpus(landing_dir, limit=None, min_words=0):  # the real one walks the stdlib (~10 s here)
        out = {}
        for source, n in (("alpha", 3), ("beta", 1)):
            path = landing_dir / "sample" / f"{source}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"title": f"{source}{i}", "content": f"text {i} " * 9,
                                                "url": f"https://e.org/{source}/{i}"}) + "\n" for i in range(n)))
            out[source] = (path, n)
        return out

    monkeypatch.setattr(ml.sample_corpus, "write_sample_corpus", small_corpus)
    home = s3.url("sample-home")
    assert lineage(["--home", home, "sample-corpus"]) == 0
    assert f"4 documents in {home}/landing" in capsys.readouterr().out
    files = scan_landing(f"{home}/landing")
    assert [(f.relpath, f.problem) for f in files] == [("sample/alpha.jsonl", None), ("sample/beta.jsonl", None)]
    assert files[0].size == len(s3.client().cat_file(f"{s3.bucket}/sample-home/landing/sample/alpha.jsonl"))


def test_resource_config_reaches_the_bucket_without_aws_variables(s3, monkeypatch):
    import ml.storage
    from resources import ArtifactStoreResource, CatalogResource

    for name in s3.env():
        monkeypatch.delenv(name)
    monkeypatch.setattr(ml.storage, "_options", {})  # configure() below fills it; restored after the test
    conf = {"home": s3.url("resource-home"), "s3_endpoint_url": s3.endpoint, "s3_access_key_id": s3.access_key,
            "s3_secret_access_key": s3.secret_key, "s3_region": s3.region}
    v = _put(ArtifactStoreResource(**conf).get(), "via config", "9" * 16)
    assert ArtifactStoreResource(**conf).get().lookup("thing", "9" * 16).data_version == v.data_version
    assert CatalogResource(**conf).get().query("select count(*) as n from asset_versions")["n"].item() == 0
