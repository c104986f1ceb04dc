import json
import multiprocessing as mp
import os
import stat
from pathlib import Path

import pytest

from ml.paths import UnsafeNameError
from ml.store import MANIFEST, ArtifactStore, BuildResult, compute_fingerprint


def _build(text: str):
    def build(out: Path) -> BuildResult:
        (out / "data.txt").write_text(text)
        (out / "sub").mkdir()
        (out / "sub" / "more.txt").write_text(text.upper())
        return BuildResult(stats={"chars": len(text)}, rows=1)

    return build


def _put(store, text, fp, asset="thing"):
    return store.put(asset, _build(text), fingerprint=fp, code_version="c1", config={"k": 1},
                     upstream={"up": "0" * 16}, run_id="run-1")


def test_put_publishes_complete_version_with_manifest(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _put(store, "hello", "a" * 16)
    assert v.path == tmp_path / "artifacts" / "thing" / v.data_version
    m = json.loads((v.path / MANIFEST).read_text())
    for key in ("asset", "data_version", "code_version", "fingerprint", "config", "upstream", "run_id",
                "created_at", "files", "stats"):
        assert key in m, key
    assert m["upstream"] == {"up": "0" * 16} and m["stats"] == {"chars": 5} and m["run_id"] == "run-1"
    assert sorted(f["path"] for f in m["files"]) == ["data.txt", "sub/more.txt"]
    assert all(len(f["sha256"]) == 64 for f in m["files"])
    # published files are read-only: versions are immutable
    assert not (v.path / "data.txt").stat().st_mode & stat.S_IWUSR
    assert not list((tmp_path / "artifacts" / "_staging").iterdir())


def test_same_content_same_version_and_fingerprint_lookup_is_a_cache_hit(tmp_path):
    store = ArtifactStore(tmp_path)
    first = _put(store, "hello", "a" * 16)
    assert store.lookup("thing", "a" * 16).data_version == first.data_version
    assert store.lookup("thing", "a" * 16).cache_hit
    assert store.lookup("thing", "b" * 16) is None
    # another fingerprint, same content: same version, the existing one is reused
    again = _put(store, "hello", "b" * 16)
    assert again.data_version == first.data_version and again.reused_content
    assert store.lookup("thing", "b" * 16).data_version == first.data_version
    other = _put(store, "world", "c" * 16)
    assert other.data_version != first.data_version
    assert [v.data_version for v in store.versions("thing")] == [first.data_version, other.data_version]


def test_fingerprint_covers_code_config_and_upstream():
    base = compute_fingerprint("a", "c1", {"x": 1}, {"u": "1" * 16})
    assert base == compute_fingerprint("a", "c1", {"x": 1}, {"u": "1" * 16})
    assert base != compute_fingerprint("a", "c2", {"x": 1}, {"u": "1" * 16})
    assert base != compute_fingerprint("a", "c1", {"x": 2}, {"u": "1" * 16})
    assert base != compute_fingerprint("a", "c1", {"x": 1}, {"u": "2" * 16})
    assert base != compute_fingerprint("b", "c1", {"x": 1}, {"u": "1" * 16})


def test_build_that_raises_leaves_no_version_and_next_write_succeeds(tmp_path):
    store = ArtifactStore(tmp_path)

    def failing(out: Path):
        (out / "half.txt").write_text("partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        store.put("thing", failing, fingerprint="a" * 16, code_version="c", config={}, upstream={})
    assert store.versions("thing") == [] and store.lookup("thing", "a" * 16) is None
    assert not list((tmp_path / "artifacts" / "_staging").iterdir())
    v = _put(store, "ok", "a" * 16)
    assert store.versions("thing")[0].data_version == v.data_version


def _crash_mid_write(root: str) -> None:
    store = ArtifactStore(Path(root))

    def build(out: Path):
        (out / "data.txt").write_text("x" * 10_000)
        os._exit(17)  # the process dies: no exception handler, no cleanup

    store.put("thing", build, fingerprint="d" * 16, code_version="c", config={}, upstream={})


def test_process_killed_during_write_leaves_no_visible_version(tmp_path):
    proc = mp.get_context("spawn").Process(target=_crash_mid_write, args=(str(tmp_path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 17
    store = ArtifactStore(tmp_path)
    leftovers = list((tmp_path / "artifacts" / "_staging").iterdir())
    assert len(leftovers) == 1  # the dead writer's staging dir, invisible as a version
    assert store.versions("thing") == [] and store.lookup("thing", "d" * 16) is None
    v = _put(store, "after the crash", "d" * 16)
    assert store.lookup("thing", "d" * 16).data_version == v.data_version
    # the next write removed the dead process's staging directory
    assert not list((tmp_path / "artifacts" / "_staging").iterdir())


@pytest.mark.parametrize("asset", ["../evil", "a/b", "", "A", "x" * 65, ".hidden", "_staging"])
def test_asset_names_cannot_escape_the_store(tmp_path, asset):
    store = ArtifactStore(tmp_path)
    with pytest.raises(UnsafeNameError):
        store.put(asset, _build("x"), fingerprint="a" * 16, code_version="c", config={}, upstream={})
    with pytest.raises(UnsafeNameError):
        store.lookup(asset, "a" * 16)


@pytest.mark.parametrize("version", ["../../etc", "ABCDEF0123456789", "123", "0" * 15, "/" + "0" * 16])
def test_versions_and_fingerprints_are_validated(tmp_path, version):
    store = ArtifactStore(tmp_path)
    with pytest.raises(UnsafeNameError):
        store.get("thing", version)
    with pytest.raises(UnsafeNameError):
        store.lookup("thing", version)


def test_file_access_inside_a_version_is_path_safe(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _put(store, "hello", "a" * 16)
    assert v.file("sub/more.txt").read_text() == "HELLO"
    for bad in ["../../x", "/etc/passwd", "sub/../../x", ""]:
        with pytest.raises(UnsafeNameError):
            v.file(bad)
    # a symlink planted inside a version cannot lead outside it
    (v.path / "sub").chmod(0o755)
    os.symlink("/etc", v.path / "sub" / "link")
    with pytest.raises(UnsafeNameError):
        v.file("sub/link/passwd")


def test_symlinks_in_a_build_are_refused(tmp_path):
    store = ArtifactStore(tmp_path)

    def build(out: Path):
        os.symlink("/etc/passwd", out / "p")

    with pytest.raises(ValueError, match="not a regular file"):
        store.put("thing", build, fingerprint="a" * 16, code_version="c", config={}, upstream={})
    assert store.versions("thing") == []
