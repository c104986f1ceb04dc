"""Integrity on read: a byte flipped in a published version is found before anything uses it.

Fault-injection cases of issue 15 (corrupt a byte): the store refuses a corrupt cache hit or
upstream read with the file and both digests, moves the version aside, the catalog records it
in ``corrupt_versions``, nothing is built on top of it, and the next run rebuilds it.
"""

import json
import os
import stat
from pathlib import Path

import dagster as dg
import pytest

from assets import cleaned_chunks, raw_docs
from ml.catalog import Catalog
from ml.fsutil import sha256_file
from ml.store import CORRUPT, ArtifactStore, BuildResult, CorruptVersionError
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from tests.conftest import write_lines
from tests.helpers.curation import OTHER_PROSE, PROSE

RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}


def flip_byte(path: Path, offset: int = -10) -> None:
    """Change one byte in place (published files are read-only: make it writable first)."""
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _put(store, text, fp="a" * 16):
    def build(out: Path) -> BuildResult:
        (out / "data.txt").write_text(text)
        (out / "sub").mkdir()
        (out / "sub" / "more.txt").write_text(text.upper())
        return BuildResult(stats={"chars": len(text)})

    return store.put("thing", build, fingerprint=fp, code_version="c", config={}, upstream={})


def test_a_flipped_byte_is_named_with_both_digests(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _put(store, "hello world " * 100)
    expected = next(f["sha256"] for f in v.manifest["files"] if f["path"] == "sub/more.txt")
    assert ArtifactStore(tmp_path).verify("thing", v.data_version) == []
    flip_byte(v.path / "sub" / "more.txt")
    actual = sha256_file(v.path / "sub" / "more.txt")
    fresh = ArtifactStore(tmp_path)  # a new reader (a new step): nothing verified yet
    with pytest.raises(CorruptVersionError) as err:
        fresh.open("thing", v.data_version)
    msg = str(err.value)
    assert "sub/more.txt" in msg and expected in msg and actual in msg
    assert err.value.problems == [{"path": "sub/more.txt", "expected_sha256": expected, "actual_sha256": actual,
                                   "expected_bytes": 1200, "actual_bytes": 1200, "why": ""}]
    # the cache hit is refused the same way
    with pytest.raises(CorruptVersionError):
        ArtifactStore(tmp_path).lookup("thing", "a" * 16)


def test_size_change_missing_and_unlisted_files_are_problems(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _put(store, "abc")
    (v.path / "data.txt").chmod(0o644)
    with open(v.path / "data.txt", "ab") as f:
        f.write(b"!")
    (v.path / "sub").chmod(0o755)
    (v.path / "sub" / "more.txt").unlink()
    (v.path / "sub" / "planted.bin").write_bytes(b"x")
    probs = {p["path"]: p for p in ArtifactStore(tmp_path).verify("thing", v.data_version)}
    assert set(probs) == {"data.txt", "sub/more.txt", "sub/planted.bin"}
    assert probs["data.txt"]["expected_bytes"] == 3 and probs["data.txt"]["actual_bytes"] == 4
    assert probs["sub/more.txt"]["why"] == "listed in the manifest but missing"
    assert probs["sub/planted.bin"]["why"] == "not in the manifest"


def test_manifest_edited_to_match_a_corrupt_file_is_caught(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _put(store, "abc")
    flip_byte(v.path / "data.txt", 0)
    m = json.loads((v.path / "manifest.json").read_text())
    for f in m["files"]:  # someone "fixes" the manifest: its file list no longer digests to the version
        if f["path"] == "data.txt":
            f["sha256"] = sha256_file(v.path / "data.txt")
    (v.path / "manifest.json").chmod(0o644)
    (v.path / "manifest.json").write_text(json.dumps(m))
    probs = ArtifactStore(tmp_path).verify("thing", v.data_version)
    assert [p["path"] for p in probs] == ["manifest.json"]


def test_quarantine_then_rebuild_publishes_a_fresh_copy(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _put(store, "payload")
    flip_byte(v.path / "data.txt", 0)
    moved = store.quarantine("thing", v.data_version)
    assert moved.parent == tmp_path / "artifacts" / CORRUPT / "thing" and moved.name.startswith(v.data_version)
    assert not store.has_version("thing", v.data_version)
    assert store.lookup("thing", "a" * 16) is None  # the index points at nothing: a miss, so a rebuild
    again = _put(store, "payload")
    assert again.data_version == v.data_version and not again.reused_content
    assert ArtifactStore(tmp_path).verify("thing", v.data_version) == []
    assert store.corrupt_versions() == [moved]


def test_put_never_reuses_a_corrupt_existing_copy(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _put(store, "same content", fp="a" * 16)
    flip_byte(v.path / "sub" / "more.txt", 0)
    again = _put(ArtifactStore(tmp_path), "same content", fp="b" * 16)  # same content by another road
    assert again.data_version == v.data_version and not again.reused_content
    assert ArtifactStore(tmp_path).verify("thing", v.data_version) == []
    assert len(store.corrupt_versions()) == 1


def _run(instance, selection=None, raise_on_error=True):
    return dg.materialize([raw_docs, cleaned_chunks], instance=instance, resources=RESOURCES, selection=selection,
                          raise_on_error=raise_on_error)


def _failure_message(result) -> str:
    return "\n".join(str(e.event_specific_data.error.message) for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


def _doc(i, text):
    return json.dumps({"title": f"doc {i}", "content": text, "url": f"https://example.org/{i}"})


@pytest.mark.slow
def test_corrupt_upstream_and_cache_hit_fail_the_step_and_the_next_run_rebuilds(home):
    write_lines(home / "landing" / "a.jsonl", [_doc(0, PROSE), _doc(1, OTHER_PROSE), "{broken"])
    store, cat = ArtifactStore(home), Catalog(home)
    with dg.instance_for_test() as instance:
        first = _run(instance)
        raw_v = first.asset_materializations_for_node("raw_docs")[0].tags["dagster/data_version"]
        chunks_v = first.asset_materializations_for_node("cleaned_chunks")[0].tags["dagster/data_version"]
        part = store.get("raw_docs", raw_v).path / "docs" / "u00000-part-00000.parquet"
        expected = sha256_file(part)
        flip_byte(part)
        actual = sha256_file(part)

        # a forced cleaned_chunks rebuild reads raw_docs: refused, nothing built on top of the corrupt file
        n_chunk_versions = len(store.versions("cleaned_chunks"))
        forced = dg.materialize([raw_docs, cleaned_chunks], instance=instance, resources=RESOURCES,
                                selection=["cleaned_chunks"], raise_on_error=False,
                                run_config={"ops": {"cleaned_chunks": {"config": {"chunk_size": 200}}}})
        assert not forced.success
        msg = _failure_message(forced)
        assert "docs/u00000-part-00000.parquet" in msg and expected in msg and actual in msg
        assert len(store.versions("cleaned_chunks")) == n_chunk_versions
        assert not store.has_version("raw_docs", raw_v)  # moved aside
        rows = cat.query("SELECT asset, data_version, path, expected_sha256, actual_sha256 FROM corrupt_versions").rows()
        assert rows == [("raw_docs", raw_v, "docs/u00000-part-00000.parquet", expected, actual)]

        # the next run rebuilds raw_docs (same bytes from the landing zone, same version), then all is well
        again = _run(instance)
        assert again.success
        assert again.asset_materializations_for_node("raw_docs")[0].tags["dagster/data_version"] == raw_v
        assert again.asset_materializations_for_node("cleaned_chunks")[0].tags["dagster/data_version"] == chunks_v
        assert ArtifactStore(home).verify("raw_docs", raw_v) == []

        # a corrupt cache hit: the rerun of raw_docs itself fails instead of reusing it
        flip_byte(store.get("raw_docs", raw_v).path / "quarantine" / "u00000-part-00000.parquet")
        hit = _run(instance, selection=["raw_docs"], raise_on_error=False)
        assert not hit.success and "quarantine/u00000-part-00000.parquet" in _failure_message(hit)
        assert cat.query("SELECT count(DISTINCT path) FROM corrupt_versions").item() == 2
        assert _run(instance, selection=["raw_docs"]).success  # rebuilt


def test_corrupt_version_dirs_do_not_count_as_versions(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _put(store, "x")
    store.quarantine("thing", v.data_version)
    assert store.versions("thing") == []
    assert os.path.isdir(store.corrupt_versions()[0])


def _fake_bundle(store: ArtifactStore) -> str:
    """An onnx_bundle version with the files promote reads (no real models: promote must refuse it
    on integrity before it loads anything)."""
    def build(out: Path) -> BuildResult:
        (out / "bundle").mkdir()
        (out / "bundle" / "manifest.json").write_text(json.dumps({"models": {"embedding": {}}}))
        (out / "bundle" / "parity.json").write_text(json.dumps({"models": {"embedding": {"fp32": {"passed": True}}}}))
        (out / "bundle.tar.gz").write_bytes(os.urandom(4096))
        return BuildResult()

    return store.put("onnx_bundle", build, fingerprint="c" * 16, code_version="c", config={}, upstream={}).data_version


def test_promote_verifies_first_and_refuses_a_corrupt_bundle(tmp_path, capsys):
    from ml.cli import main as lineage

    store = ArtifactStore(tmp_path)
    version = _fake_bundle(store)
    tar = store.get("onnx_bundle", version).path / "bundle.tar.gz"
    expected = sha256_file(tar)
    flip_byte(tar, 100)
    capsys.readouterr()
    assert lineage(["--home", str(tmp_path), "promote", "embedding", version[:8]]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "bundle.tar.gz" in err and expected in err and sha256_file(
        store.corrupt_versions()[0] / "bundle.tar.gz") in err
    assert Catalog(tmp_path).query("SELECT detected_by, path FROM corrupt_versions").rows() == [
        ("lineage promote", "bundle.tar.gz")]
    assert Catalog(tmp_path).query("SELECT count(*) FROM promotions").item() == 0


def test_lineage_verify_takes_a_version_a_directory_or_the_whole_store(tmp_path, capsys):
    from ml.cli import main as lineage

    store = ArtifactStore(tmp_path)
    good = _put(store, "good", fp="a" * 16)
    version = _fake_bundle(store)
    vdir = store.get("onnx_bundle", version).path
    home = ["--home", str(tmp_path)]
    assert lineage([*home, "verify", f"thing@{good.data_version[:6]}"]) == 0
    assert lineage([*home, "verify", str(vdir)]) == 0
    assert lineage([*home, "verify", str(vdir / "bundle")]) == 0  # anything inside a version names it
    assert lineage([*home, "verify", "--all"]) == 0
    assert "2 version(s) checked, 0 corrupt" in capsys.readouterr().out
    assert lineage([*home, "verify", "thing@ffff"]) == 2  # no such version
    flip_byte(vdir / "bundle" / "parity.json", 3)
    assert lineage([*home, "verify", "--all"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL onnx_bundle@{version}" in out and "bundle/parity.json: sha256" in out
    assert "1 corrupt" in out and not store.has_version("onnx_bundle", version)
    assert Catalog(tmp_path).query("SELECT asset, detected_by FROM corrupt_versions").rows() == [
        ("onnx_bundle", "lineage verify")]
    assert lineage([*home, "verify", "--all"]) == 0  # what is left is intact
