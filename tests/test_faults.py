"""Fault injection (issue 15): writers killed at named events, concurrent writers of one version.

Each case checks what a user would see afterwards: no half-written version, exact catalog counts
(never doubled), a version the catalog missed recorded on the next read or by ``lineage gc
--repair``, and leftovers of dead writers listed and removed by ``lineage gc``.
"""

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from assets import raw_docs
from ml import faults
from ml.catalog import Catalog, own_batch_id
from ml.cli import main as lineage
from ml.gc import find_leftovers
from ml.store import ArtifactStore
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from tests.conftest import REPO, write_lines

RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}
LINES = [json.dumps({"title": f"t{i}", "content": f"document number {i} " * 5, "url": f"https://e.org/{i}"})
         for i in range(20)] + ["{not json", "", "[1, 2]"]
QUARANTINED = 3


def _materialize():
    with dg.instance_for_test() as instance:
        return dg.materialize([raw_docs], instance=instance, resources=RESOURCES)


KILLED_RUN = """
import dagster as dg
from assets import raw_docs
from resources import ArtifactStoreResource, CatalogResource, LandingZone
with dg.instance_for_test() as instance:
    dg.materialize([raw_docs], instance=instance,
                   resources={"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()})
raise SystemExit(3)  # reached only when no fault point killed the process
"""


def _run_killed_at(event: str) -> int:
    """Materialize raw_docs in a child process that SIGKILLs itself at ``event``; its exit code."""
    env = {**os.environ, faults.ENV: f"{event}=kill"}
    return subprocess.run([sys.executable, "-c", KILLED_RUN], cwd=REPO, env=env, timeout=300,
                          capture_output=True).returncode


def _counts(home):
    cat = Catalog(home)
    return {t: cat.query(f"SELECT count(*) FROM {t} WHERE asset = 'raw_docs'").item()
            for t in ("asset_versions", "quarantine", "dataset_stats")}


def _n_stats(home) -> int:
    return sum(isinstance(v, (int, float)) for v in ArtifactStore(home).versions("raw_docs")[0].stats.values())


@pytest.fixture
def landed(home):
    write_lines(home / "landing" / "a.jsonl", LINES)
    return home


@pytest.mark.slow
def test_killed_after_publish_then_rerun_records_the_version_exactly_once(landed):
    from ml.curation_units import ingest_unit
    from ml.raw_docs import IngestConfig, scan_landing

    for f in scan_landing(landed / "landing"):  # its unit stored already: the first publish is raw_docs' own
        ingest_unit(ArtifactStore(landed), f, IngestConfig())
    assert _run_killed_at("store.after_publish") == -9
    store = ArtifactStore(landed)
    (version,) = store.versions("raw_docs")  # published whole, though its writer died
    assert _counts(landed)["asset_versions"] == 0
    assert _materialize().success  # no index entry: rebuilt, same content, the existing copy reused
    counts = _counts(landed)
    # the killed run's materialization (repaired from the manifest) and this one; own rows once
    assert counts == {"asset_versions": 2, "quarantine": QUARANTINED, "dataset_stats": _n_stats(landed)}
    runs = Catalog(landed).query("SELECT run_id FROM asset_versions ORDER BY created_at")["run_id"].to_list()
    assert runs[0] == version.manifest["run_id"]


@pytest.mark.slow
def test_killed_before_cataloguing_is_repaired_by_gc_and_own_rows_by_the_next_run(landed, capsys):
    assert _run_killed_at("materialize.before_catalog") == -9
    assert _counts(landed)["asset_versions"] == 0
    assert lineage(["--home", str(landed), "gc"]) == 0  # dry run: says what --repair would record
    assert "not in the catalog: raw_docs@" in capsys.readouterr().out
    assert _counts(landed)["asset_versions"] == 0
    assert lineage(["--home", str(landed), "gc", "--repair"]) == 0
    assert _counts(landed) == {"asset_versions": 1, "quarantine": 0, "dataset_stats": _n_stats(landed)}
    assert lineage(["--home", str(landed), "gc", "--repair"]) == 0  # idempotent
    assert _counts(landed)["asset_versions"] == 1
    run = _materialize()  # a cache hit: writes the rows only the asset can derive (its quarantine)
    assert run.asset_materializations_for_node("raw_docs")[0].metadata["cache_hit"].value is True
    assert _counts(landed) == {"asset_versions": 2, "quarantine": QUARANTINED, "dataset_stats": _n_stats(landed)}


@pytest.mark.slow
def test_killed_mid_write_leaves_leftovers_that_gc_lists_then_removes(landed, capsys):
    store = ArtifactStore(landed)
    for event, kind in [("store.before_publish", "artifact staging"), ("catalog.before_rename", "catalog staging")]:
        assert _run_killed_at(event) == -9
        leftovers = find_leftovers(landed)  # the owner is a dead process on this host: no age needed
        assert [x.kind for x in leftovers] == [kind], leftovers
        assert "dead" in leftovers[0].why
        assert lineage(["--home", str(landed), "gc"]) == 0
        out = capsys.readouterr().out
        assert "dry run" in out and str(leftovers[0].path) in out
        assert leftovers[0].path.exists()  # a dry run removes nothing
        assert lineage(["--home", str(landed), "gc", "--apply"]) == 0
        assert not leftovers[0].path.exists() and find_leftovers(landed, min_age_s=0) == []
    # the second killed run had published and indexed its version: the next read repairs the catalog
    (version,) = store.versions("raw_docs")
    assert _materialize().success
    assert _counts(landed) == {"asset_versions": 2, "quarantine": QUARANTINED, "dataset_stats": _n_stats(landed)}


def test_a_live_writers_staging_is_never_a_leftover(landed):
    staging = landed / "artifacts" / "_staging" / f"raw_docs~{os.getpid()}~abcd~{os.uname().nodename}"
    staging.mkdir(parents=True)
    assert find_leftovers(landed, min_age_s=0) == []
    tmp = landed / "artifacts" / "raw_docs" / "_fingerprints" / ".x.json.123.tmp"
    tmp.parent.mkdir(parents=True)
    tmp.write_text("{")
    assert find_leftovers(landed, min_age_s=3600) == []  # young: may be a write in flight
    assert [x.kind for x in find_leftovers(landed, min_age_s=0)] == ["temporary file"]


@pytest.mark.slow
def test_two_runs_racing_on_one_version_write_its_rows_exactly_once(landed, tmp_path):
    """Two processes build the same version and both find the catalog without it (forced: each
    waits at the point between that check and the write until the other got there too)."""
    barrier = tmp_path / "barrier"
    env = {**os.environ, faults.ENV: f"catalog.before_own_batch=barrier:{barrier}:2"}
    procs = [subprocess.Popen([sys.executable, "-c", KILLED_RUN], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [3, 3], [o[-2000:] for o in outs]  # both ran to the end
    assert len(list(barrier.iterdir())) == 2  # both really were in the window at once
    assert _counts(landed) == {"asset_versions": 2, "quarantine": QUARANTINED, "dataset_stats": _n_stats(landed)}
    (version,) = ArtifactStore(landed).versions("raw_docs")
    assert Catalog(landed).has_batch(own_batch_id("raw_docs", version.data_version))


def test_views_hide_duplicate_rows_an_old_catalog_holds(tmp_path):
    cat = Catalog(tmp_path)
    for run in ("r1", "r2"):  # two batches with random ids (before own batches existed), same version
        cat.append({"dataset_stats": [{"asset": "a", "data_version": "f" * 16, "stat": "n", "value": 1.0}],
                    "quarantine": [{"source": "x", "line": 1, "reason": "blank_line", "excerpt": "", "run_id": run,
                                    "asset": "a", "data_version": "f" * 16}]})
    assert cat.query("SELECT count(*) FROM dataset_stats").item() == 1
    assert cat.query("SELECT run_id FROM quarantine").rows() == [("r1",)]
    # an idempotent batch is written once, whoever asks
    rows = {"dataset_stats": [{"asset": "b", "data_version": "e" * 16, "stat": "n", "value": 2.0}]}
    assert cat.append(rows, batch_id=own_batch_id("b", "e" * 16)) == own_batch_id("b", "e" * 16)
    assert cat.append(rows, batch_id=own_batch_id("b", "e" * 16)) is None
    assert cat.query("SELECT count(*) FROM dataset_stats WHERE asset = 'b'").item() == 1


def test_a_misspelt_fault_event_fails_loudly(monkeypatch):
    monkeypatch.setenv(faults.ENV, "store.after_pubish=kill")
    with pytest.raises(ValueError, match="unknown fault event 'store.after_pubish'"):
        faults.fault_point("store.after_publish")
    monkeypatch.setenv(faults.ENV, "store.after_publish=sleep:0")
    faults.fault_point("store.after_publish")  # armed with a harmless action: returns
