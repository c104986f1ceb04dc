"""The landing zone cannot reach outside itself, and every odd entry is accounted (issue 15).

Fault-injection cases: a symlink out of the landing root (to a file and to a directory), a link
inside it, a directory with a landing name, a file the process cannot open (simulated, and for
real as an unprivileged user), a UTF-8 byte order mark; the landing sensor sees the same state.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest

import ml.raw_docs as rd
from ml.raw_docs import MARKERS, ingest, read_docs, read_quarantine, scan_landing
from sensors.landing import observe
from tests.conftest import REPO, write_lines

SECRET = "root:x:0:0:do-not-ingest-this-line"


def _doc(i: int) -> str:
    return json.dumps({"title": f"t{i}", "content": f"content of document {i}", "url": f"https://e.org/{i}"})


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    write_lines(root / "good.jsonl", [_doc(0), _doc(1)])
    outside = tmp_path / "outside"
    write_lines(outside / "passwd", [SECRET])
    write_lines(outside / "dir" / "more.jsonl", [_doc(9)])
    os.symlink(outside / "passwd", root / "y.jsonl")  # a link out of the root, to a file
    os.symlink(outside / "dir", root / "linked_dir")  # a link out of the root, to a directory
    os.symlink("good.jsonl", root / "alias.jsonl")  # a link inside the root
    (root / "x.jsonl").mkdir()  # a directory with a landing name: its files are still read
    write_lines(root / "x.jsonl" / "inner.jsonl", [_doc(2)])
    return root


def _everything_written(out: Path) -> str:
    docs = read_docs(out).collect()
    q = read_quarantine(out).collect()
    return docs.write_csv() + q.write_csv()


def test_links_are_never_followed_and_each_entry_is_accounted(landing, tmp_path):
    files = scan_landing(landing)
    assert {f.relpath: f.problem for f in files} == {
        "alias.jsonl": "symlink", "good.jsonl": None, "linked_dir": "symlink", "x.jsonl": "not_regular_file",
        "x.jsonl/inner.jsonl": None, "y.jsonl": "symlink"}
    details = {f.relpath: f.detail for f in files}
    assert "outside" in details["y.jsonl"] and "inside" in details["alias.jsonl"]
    report = ingest(files, tmp_path / "out")
    assert SECRET not in _everything_written(tmp_path / "out")
    assert "document 9" not in _everything_written(tmp_path / "out")  # behind the linked directory
    assert report.kept == 3 and report.reasons == {"symlink": 3, "not_regular_file": 1}
    assert report.lines_read == report.kept + report.quarantined == 7
    q = read_quarantine(tmp_path / "out").collect().sort("source")
    assert q.select("source", "line", "reason").rows() == [
        ("alias.jsonl", 0, "symlink"), ("linked_dir", 0, "symlink"), ("x.jsonl", 0, "not_regular_file"),
        ("y.jsonl", 0, "symlink")]
    assert q["excerpt"].to_list() == ["", "", "", ""]


def test_a_file_swapped_for_a_link_after_the_scan_is_not_read(landing, tmp_path):
    files = scan_landing(landing)
    good = landing / "good.jsonl"
    good.unlink()
    os.symlink(tmp_path / "outside" / "passwd", good)  # swapped between scan and read
    report = ingest(files, tmp_path / "out")
    assert SECRET not in _everything_written(tmp_path / "out")
    assert report.per_source["good.jsonl"] == {"unreadable_file": 1}


def test_unreadable_file_is_a_quarantine_row_and_ingest_goes_on(landing, tmp_path, monkeypatch):
    locked = write_lines(landing / "locked.jsonl", [_doc(5)])
    real_open = os.open

    def deny(path, flags, *a, **kw):  # what a non-root process gets for a chmod 000 file
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(rd.os, "open", deny)
    files = scan_landing(landing)
    entry = next(f for f in files if f.relpath == "locked.jsonl")
    assert entry.problem == "unreadable_file" and entry.sha256 == MARKERS["unreadable_file"]
    assert "Permission denied" in entry.detail
    report = ingest(files, tmp_path / "out")
    assert report.per_source["locked.jsonl"] == {"unreadable_file": 1} and report.kept == 3
    assert report.lines_read == report.kept + report.quarantined


UNPRIVILEGED = """
import json, sys
from pathlib import Path
from ml.raw_docs import ingest, scan_landing
root = Path(sys.argv[1])
report = ingest(scan_landing(root), root.parent / "out")
print(json.dumps({"kept": report.kept, "reasons": dict(report.reasons)}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root to switch to nobody")
def test_unreadable_file_for_real_as_an_unprivileged_user():
    base = Path(tempfile.mkdtemp(prefix="landing-nobody-"))
    try:
        base.chmod(0o777)
        root = base / "landing"
        write_lines(root / "ok.jsonl", [_doc(0)])
        write_lines(root / "locked.jsonl", [_doc(1)]).chmod(0o000)
        for p in (root, root / "ok.jsonl"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        # the venv's interpreter may live under /root (unreadable to nobody): then the system python of
        # the same version, with the venv's site-packages on its path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(pl.__file__).parents[1])])}
        python, why = None, ""
        for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
            probe = subprocess.run(["runuser", "-u", "nobody", "--", candidate, "-c",
                                    f"import sys, polars; assert sys.version_info[:2] == {tuple(sys.version_info[:2])}"],
                                   capture_output=True, text=True, cwd=REPO, env=env)
            if probe.returncode == 0:
                python = candidate
                break
            why = probe.stderr[-300:]
        if python is None:
            pytest.skip(f"user nobody cannot run a python with this project's packages here: {why}")
        res = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c", UNPRIVILEGED, str(root)],
                             capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        assert json.loads(res.stdout.splitlines()[-1]) == {"kept": 1, "reasons": {"unreadable_file": 1}}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_leading_bom_is_stripped_and_counted(tmp_path):
    root = tmp_path / "landing"
    write_lines(root / "bom.jsonl", [b"\xef\xbb\xbf" + _doc(0).encode(), _doc(1)])
    write_lines(root / "mid.jsonl", [_doc(2), b"\xef\xbb\xbf" + _doc(3).encode()])  # only a file's start is special
    report = ingest(scan_landing(root), tmp_path / "out")
    assert report.per_source["bom.jsonl"] == {"kept": 2}
    assert report.per_source["mid.jsonl"] == {"kept": 1, "invalid_json": 1}
    assert report.stats()["bom_stripped"] == 1
    docs = read_docs(tmp_path / "out").collect()
    assert docs.filter(pl.col("source") == "bom.jsonl")["title"].to_list() == ["t0", "t1"]


def test_landing_sensor_sees_what_raw_docs_accounts(landing, monkeypatch):
    obs = observe(landing, {}, settle=0)
    upstream = {f.relpath: f.sha256 for f in scan_landing(landing)}  # what raw_docs records as upstream
    assert obs.digests == upstream
    assert obs.digests["y.jsonl"] == "symlink" and obs.digests["x.jsonl"] == "not_a_file"
