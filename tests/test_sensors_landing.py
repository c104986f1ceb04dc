"""landing_sensor on a temporary instance: evaluated with build_sensor_context against the real definitions."""

import gzip
import json
import os
import time
import uuid

import dagster as dg
import pytest

from assets import raw_docs
from definitions import defs
from ml.raw_docs import scan_landing
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from sensors.common import load_profile, run_config_for
from sensors.landing import list_landing, observe
from sensors import landing_sensor
from tests.conftest import write_lines

OLD = time.time() - 3600  # an mtime long settled


@pytest.fixture(autouse=True)
def _slow_settle(monkeypatch):
    # fresh files are "still being written" until seen unchanged on a second tick
    monkeypatch.setenv("LINEAGE_LANDING_SETTLE_SECONDS", "600")


def _doc(i: int) -> str:
    return json.dumps({"title": f"doc {i}", "content": f"Document number {i} says something.", "url": f"https://e.org/{i}"})


def _drop(path, lines, mtime=OLD):
    write_lines(path, lines)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


class Ticker:
    """Evaluates the sensor tick after tick, carrying the cursor like the daemon does."""

    def __init__(self, instance):
        self.instance, self.cursor = instance, None

    def __call__(self) -> dg.SensorResult:
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs,
                                      resources={"landing": LandingZone()})
        result = landing_sensor(ctx)
        self.cursor = result.cursor
        return result


def _ingest(instance):
    result = dg.materialize([raw_docs], instance=instance, resources={
        "store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()})
    assert result.success


def test_new_file_requests_one_ingest_and_identical_bytes_request_nothing(home):
    landing = home / "landing"
    _drop(landing / "a.jsonl", [_doc(1), _doc(2)])
    with dg.DagsterInstance.ephemeral() as instance:
        tick = Ticker(instance)
        first = tick()
        (req,) = first.run_requests
        assert req.job_name == "ingest_job" and req.run_key.startswith("landing-")
        assert req.tags["lineage/trigger"] == "landing_sensor" and req.tags["lineage/landing_files"] == "1"
        # the default profile (configs/debug.yaml), cut to the job's ops, is a valid run config for it
        job_ops = set(defs.get_repository_def().get_job("ingest_job").graph.node_dict)
        assert "raw_docs" in set(req.run_config["ops"]) == set(load_profile()["ops"]) & job_ops
        assert dg.validate_run_config(defs.resolve_job_def("ingest_job"), req.run_config)

        again = tick()  # nothing changed since the request
        assert again.run_requests == [] and "already requested" in again.skip_reason.skip_message

        _ingest(instance)
        assert tick().run_requests == []

        _drop(landing / "a.jsonl", [_doc(1), _doc(2)], mtime=time.time() - 1200)  # same bytes, rewritten
        state = json.loads(tick.cursor)["files"]["a.jsonl"]
        result = tick()
        assert result.run_requests == [] and "unchanged since the last ingest" in result.skip_reason.skip_message
        assert json.loads(tick.cursor)["files"]["a.jsonl"]["mtime_ns"] != state["mtime_ns"]  # it was re-hashed

        fresh = Ticker(instance)  # a sensor started over an already ingested landing zone
        assert fresh().run_requests == []

        _drop(landing / "a.jsonl", [_doc(1), _doc(3)])  # changed content
        (changed,) = tick().run_requests
        assert changed.run_key != req.run_key
        assert changed.tags["lineage/landing_fingerprint"] != req.tags["lineage/landing_fingerprint"]


def test_partial_and_growing_files_wait_until_complete(home):
    landing = home / "landing"
    with dg.DagsterInstance.ephemeral() as instance:
        tick = Ticker(instance)
        part = landing / "b.jsonl.partial"
        _drop(part, [_doc(1)], mtime=None)
        result = tick()
        assert result.run_requests == [] and "1 *.partial" in result.skip_reason.skip_message

        _drop(landing / "a.jsonl", [_doc(0)])  # complete, but b is not: wait for the whole landing
        os.replace(part, landing / "b.jsonl")  # renamed into place, fresh mtime: maybe still growing
        result = tick()
        assert result.run_requests == [] and "still being written: b.jsonl" in result.skip_reason.skip_message

        with open(landing / "b.jsonl", "a") as f:  # it was: its size changes between ticks
            f.write(_doc(2) + "\n")
        assert tick().run_requests == []

        (req,) = tick().run_requests  # same size and mtime as the previous tick: complete
        assert req.tags["lineage/landing_files"] == "2"
        assert set(json.loads(tick.cursor)["files"]) == {"a.jsonl", "b.jsonl"}


def test_removal_and_a_return_to_an_earlier_state_each_request_an_ingest(home):
    landing = home / "landing"
    _drop(landing / "a.jsonl", [_doc(1)])
    with gzip.open(landing / "b.jsonl.gz", "wt") as f:
        f.write(_doc(2) + "\n")
    os.utime(landing / "b.jsonl.gz", (OLD, OLD))
    with dg.DagsterInstance.ephemeral() as instance:
        tick = Ticker(instance)
        keys = []
        for change in (None, lambda: (landing / "b.jsonl.gz").unlink(),
                       lambda: _drop(landing / "b.jsonl", [_doc(2)])):
            if change:
                change()
            (req,) = tick().run_requests
            keys.append(req.run_key)
            _ingest(instance)
        (landing / "b.jsonl").unlink()  # back to {a.jsonl}: the state of the second request
        (req,) = tick().run_requests
        keys.append(req.run_key)
        assert len(set(keys)) == 4  # a repeated state still gets a fresh key (Dagster skips old run keys)


def test_a_burst_during_an_ingest_run_becomes_one_follow_up_request(home):
    landing = home / "landing"
    _drop(landing / "a.jsonl", [_doc(1)])
    with dg.DagsterInstance.ephemeral() as instance:
        tick = Ticker(instance)
        tick()
        run = dg.DagsterRun(job_name="ingest_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
        instance.add_run(run)
        for i in range(2, 5):  # three landings while that run is in flight
            _drop(landing / f"{i}.jsonl", [_doc(i)])
            result = tick()
            assert result.run_requests == [] and f"waiting for ingest_job {run.run_id[:8]}" in result.skip_reason.skip_message
        instance.report_run_failed(run)  # the run ends (how does not matter)
        (req,) = tick().run_requests
        assert req.tags["lineage/landing_files"] == "4"
        assert tick().run_requests == []
        # a run of preference_dataset alone holds back a document landing too (both would build it)
        prefs_run = dg.DagsterRun(job_name="ingest_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
                                  asset_selection=frozenset({dg.AssetKey("preference_dataset")}))
        instance.add_run(prefs_run)
        _drop(landing / "5.jsonl", [_doc(5)])
        result = tick()
        assert result.run_requests == [] and f"waiting for ingest_job {prefs_run.run_id[:8]}" in result.skip_reason.skip_message


def test_listing_matches_what_raw_docs_reads(tmp_path):
    root = tmp_path / "landing"
    for rel in ["a.jsonl", "sub/b.jsonl.gz", "sub/deep/c.jsonl", ".hidden.jsonl", ".tmp/d.jsonl",
                "sub/.e.jsonl", "f.jsonl.partial", "g.json", "h.txt"]:
        _drop(root / rel, [_doc(0)])
    files, partial = list_landing(root)
    assert sorted(files) == [f.relpath for f in scan_landing(root)] == ["a.jsonl", "sub/b.jsonl.gz", "sub/deep/c.jsonl"]
    assert partial == ["f.jsonl.partial"]
    obs = observe(root, {}, settle=600)
    assert {r: f["sha256"] for r, f in obs.complete.items()} == {f.relpath: f.sha256 for f in scan_landing(root)}


def test_hashing_has_a_budget_per_tick_and_resumes_on_the_next(home, monkeypatch):
    landing = home / "landing"
    for i in range(3):
        _drop(landing / f"{i}.jsonl", [_doc(i)])
    monkeypatch.setenv("LINEAGE_LANDING_HASH_SECONDS", "0")  # no time to hash anything this tick
    with dg.DagsterInstance.ephemeral() as instance:
        tick = Ticker(instance)
        result = tick()
        assert result.run_requests == [] and "3 file(s) not hashed yet" in result.skip_reason.skip_message
        assert json.loads(tick.cursor)["files"] == {}
        monkeypatch.setenv("LINEAGE_LANDING_HASH_SECONDS", "20")
        (req,) = tick().run_requests
        assert req.tags["lineage/landing_files"] == "3"


def test_profile_from_env_is_cut_to_the_ops_of_the_run(tmp_path, monkeypatch):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(
        "execution:\n  config:\n    in_process: {}\n"
        "ops:\n  raw_docs:\n    config:\n      batch_rows: 7\n"
        "  lm_checkpoint:\n    config:\n      max_steps: 3\n")
    monkeypatch.setenv("LINEAGE_RUN_CONFIG", str(profile))
    repo = defs.get_repository_def()
    cfg = run_config_for(repo, "ingest_job")
    assert cfg == {"execution": {"config": {"in_process": {}}}, "ops": {"raw_docs": {"config": {"batch_rows": 7}}}}
    assert dg.validate_run_config(defs.resolve_job_def("ingest_job"), cfg)
    assert run_config_for(repo, "ingest_job", [dg.AssetKey("cleaned_chunks")]) == {
        "execution": {"config": {"in_process": {}}}}
    monkeypatch.setenv("LINEAGE_RUN_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match="LINEAGE_RUN_CONFIG"):
        run_config_for(repo, "ingest_job")


def test_a_change_only_under_preferences_selects_preference_dataset_alone():
    from sensors.landing import PREFERENCES, only_preferences_changed

    ingested = {"a.jsonl": "aaaa", "preferences/p.jsonl": "pppp"}
    same = {"a.jsonl": "aaaa1234", "preferences/p.jsonl": "pppp1234"}
    assert not only_preferences_changed(same, ingested, True)  # nothing changed: no run at all
    assert only_preferences_changed({**same, "preferences/q.jsonl": "qqqq"}, ingested, True)  # added
    assert only_preferences_changed({**same, "preferences/p.jsonl": "ffff"}, ingested, True)  # changed
    assert only_preferences_changed({"a.jsonl": "aaaa1234"}, ingested, True)  # removed
    # one document file changes as well: every stage runs
    assert not only_preferences_changed({"a.jsonl": "bbbb", "preferences/q.jsonl": "qqqq"}, ingested, True)
    assert not only_preferences_changed({**same, "b.jsonl": "bbbb"}, ingested, True)
    # nothing ingested yet, or preference_dataset never built: every stage runs
    assert not only_preferences_changed({**same, "preferences/q.jsonl": "qqqq"}, None, True)
    assert not only_preferences_changed({**same, "preferences/q.jsonl": "qqqq"}, ingested, False)
    # the selected run's config is the profile cut to preference_dataset's ops, and valid for that subset
    repo = defs.get_repository_def()
    config = run_config_for(repo, "ingest_job", [PREFERENCES])
    assert set(config["ops"]) == {"preference_dataset"} & set(load_profile()["ops"])
    subset = repo.get_job("ingest_job").get_subset(asset_selection={PREFERENCES})
    assert dg.validate_run_config(subset, config)
