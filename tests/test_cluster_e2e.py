"""The cluster end to end, on 127.0.0.1, with real servers started here in temporary directories:
PostgreSQL (the Dagster instance), redis-server (the Celery broker and result backend), SeaweedFS's
S3 gateway (LINEAGE_HOME=s3://..., compute logs) and two Celery workers, each in its own working
directory with its own scratch space and DAGSTER_HOME (which holds only configs/cluster/dagster.yaml).

One cluster serves every test of the module, in order:
1. worker w2 (queues dagster and gpu) runs with a fault point that SIGKILLs its pool process halfway
   through uploading a version: the run fails, every visible version verifies, gc finds the leftover;
2. w2 is restarted clean and full_pipeline runs again (`dagster job execute`, configs/cluster/debug.yaml
   with tiny models): it completes, on both workers, every version in the bucket, nothing in a local home;
3. the README's lineage SQL reaches raw_docs from the bundle through the object-store catalog, and
   `lineage verify` passes on the bundle read from the bucket;
4. a second run is all cache hits;
5. with dagster-daemon running against the PostgreSQL instance, a new object in the landing prefix
   leads to an ingest_job run (landing_sensor) that succeeds and a train_job run (retrain_sensor)
   (that run's own success is not asserted: the one time it was, it failed, cause not yet known).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tests.cluster_servers import Worker, start_celery_worker, start_postgres, start_redis
from tests.servers import start_seaweedfs, stop_pid
from tests.helpers.pipeline import TINY, corpus_lines, failure_text, preference_lines

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
HOST = socket.gethostname()
RUN_TIMEOUT = 420  # seconds for one `dagster job execute` (a 2-core CI machine, tiny models)


def _profile() -> dict:
    """configs/cluster/debug.yaml (its Celery execution) with the tiny models of the automation test and
    the export gates opened: this test is about where steps run and where versions go; model quality
    has its own tests."""
    cluster = yaml.safe_load((REPO / "configs" / "cluster" / "debug.yaml").read_text())
    ops = json.loads(json.dumps(TINY["ops"]))
    for name, op in ops.items():  # the training checks ask only that the train loss fell at all
        if "train" in op["config"]:
            op["config"]["checks"] = {"min_loss_drop": 0.0}
    ops["dpo_adapter"]["config"]["train"].update(max_steps=30)  # 10 DPO steps left the loss flat here
    ops["onnx_bundle"]["config"].update(int4=False, thresholds={
        "int8_embedding_mean_cosine": 0.0, "int8_embedding_min_cosine": 0.0, "int8_lm_top1_agreement": 0.0,
        "int8_classifier_agreement": 0.0, "int8_ranker_top1_agreement": 0.0, "int8_ranker_rank_correlation": 0.0,
        "int8_token_agreement": 0.0})
    return {"ops": ops, "resources": cluster["resources"], "execution": cluster["execution"]}


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.pg = start_postgres(root / "pg")
        self.redis = start_redis(root / "redis")
        self.s3 = start_seaweedfs(root / "s3")
        self.home = self.s3.url("lh")  # s3://bucket/lh
        self.home_key = self.home.removeprefix("s3://")  # bucket/lh, as the s3fs client names it
        self.profile = root / "profile.yaml"
        self.profile.write_text(yaml.safe_dump(_profile()))
        self.env = {**os.environ, **self.s3.env(),
                    "LINEAGE_HOME": self.home, "LINEAGE_PG_URL": self.pg.url,
                    "LINEAGE_LOG_BUCKET": self.s3.bucket, "LINEAGE_LOG_PREFIX": "dagster-logs",
                    "LINEAGE_CELERY_BROKER": self.redis.db(0), "LINEAGE_CELERY_BACKEND": self.redis.db(1),
                    "LINEAGE_RUN_CONFIG": str(self.profile), "LINEAGE_SENSOR_INTERVAL": "1",
                    "LINEAGE_LANDING_SETTLE_SECONDS": "0"}
        self.env.pop("LINEAGE_FAULTS", None)
        # the process that runs `dagster job execute` (and the daemon): its own DAGSTER_HOME and scratch
        self.runner = root / "runner"
        (self.runner / "dagster_home").mkdir(parents=True)
        shutil.copy(REPO / "configs" / "cluster" / "dagster.yaml", self.runner / "dagster_home" / "dagster.yaml")
        with open(self.runner / "dagster_home" / "dagster.yaml", "a") as f:  # the daemon dequeues within a second
            f.write("\nrun_queue:\n  dequeue_interval_seconds: 1\n")
        self.runner_env = {**self.env, "DAGSTER_HOME": str(self.runner / "dagster_home"),
                           "LINEAGE_SCRATCH": str(self.runner / "scratch")}
        self.workers: dict[str, Worker] = {}
        self.state: dict = {}

    def start_worker(self, name: str, queues: tuple[str, ...], **extra: str) -> Worker:
        wdir = self.root / name
        env = {**self.env, "LINEAGE_SCRATCH": str(wdir / "scratch"), **extra}
        self.workers[name] = start_celery_worker(name, wdir, env, queues)
        return self.workers[name]

    def instance(self) -> dg.DagsterInstance:
        with _env(self.runner_env):
            return dg.DagsterInstance.get()

    def execute(self, job: str = "full_pipeline") -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "dagster"), "job", "execute", "-m", "definitions", "-j", job,
                               "-c", str(self.profile)], cwd=REPO, env=self.runner_env, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT)

    def lineage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "lineage"), *args], cwd=self.runner, env=self.runner_env,
                              capture_output=True, text=True, timeout=300)

    def fs(self):
        return self.s3.client()

    def stop(self) -> None:
        for w in self.workers.values():
            with contextlib.suppress(Exception):
                w.stop()
        stop_pid(self.redis.proc)
        self.pg.stop()
        stop_pid(self.s3.proc, timeout=3)


@contextlib.contextmanager
def _env(env: dict):
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="lineage-cluster-"))
    c = Cluster(root)
    try:
        # the sample corpus (and DPO pairs, too few derive from it) dropped into the object-store landing zone
        fs = c.fs()
        landing = c.home_key + "/landing"
        fs.pipe_file(f"{landing}/preferences/prefs.jsonl", ("\n".join(preference_lines()) + "\n").encode())
        fs.pipe_file(f"{landing}/docs.jsonl", ("\n".join(corpus_lines()) + "\n").encode())
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _latest_run(instance: dg.DagsterInstance, job: str = "full_pipeline"):
    return instance.get_run_records(filters=dg.RunsFilter(job_name=job), limit=1)[0].dagster_run


def _celery_workers(instance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker (node name) that executed it, from the run's engine events."""
    out = {}
    for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        md = getattr(e.dagster_event.event_specific_data, "metadata", None) or {}
        if "Celery worker" in md:
            out[e.step_key] = md["Celery worker"].value
    return out


def _materializations(instance, run_id: str) -> dict[str, dict]:
    out = {}
    for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        m = e.dagster_event.event_specific_data.materialization
        out[m.asset_key.to_user_string()] = {k: v.value for k, v in m.metadata.items()}
    return out


def test_killed_worker_leaves_no_visible_partial_version(cluster):
    t0 = time.monotonic()
    cluster.start_worker("w1", ("dagster",))
    # w2 takes the default queue and the gpu queue; its pool process kills itself (SIGKILL) halfway
    # through the first version upload it makes
    cluster.start_worker("w2", ("dagster", "gpu"), LINEAGE_FAULTS="store.during_upload=kill")
    out = cluster.execute()
    assert out.returncode != 0, out.stdout[-3000:]
    instance = cluster.instance()
    run = _latest_run(instance)
    assert run.status == dg.DagsterRunStatus.FAILURE
    failure = failure_text(instance, run.run_id)
    # Celery's main process saw its pool process die by SIGKILL and failed the task (WorkerLostError)
    assert "WorkerLostError" in failure and "SIGKILL" in failure, failure[-4000:]
    # every version a reader can see is complete (manifest present, every file's sha256 matches)
    verify = cluster.lineage("verify", "--all")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]
    # the killed writer's half upload is there, invisible, and gc finds it
    gc = cluster.lineage("gc", "--min-age", "0")
    assert gc.returncode == 0, gc.stderr[-3000:]
    assert "dry run: 0 leftover" not in gc.stdout and "leftover" in gc.stdout, gc.stdout
    cluster.workers.pop("w2").stop()
    cluster.start_worker("w2", ("dagster", "gpu"))
    cluster.state["kill_s"] = time.monotonic() - t0


def test_full_pipeline_runs_on_both_workers_into_the_bucket(cluster):
    t0 = time.monotonic()
    out = cluster.execute()
    cluster.state["run_s"] = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]
    instance = cluster.instance()
    run = _latest_run(instance)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    cluster.state["run_id"] = run.run_id

    workers = _celery_workers(instance, run.run_id)
    assert set(workers.values()) == {f"w1@{HOST}", f"w2@{HOST}"}, workers
    gpu_steps = {"lm_checkpoint", "lora_adapter", "embedding_checkpoint", "onnx_bundle"}
    assert {workers[s] for s in gpu_steps if s in workers} == {f"w2@{HOST}"}  # queue gpu: w2 only

    mats = _materializations(instance, run.run_id)
    from definitions import defs

    assets = {k.to_user_string() for k in defs.resolve_job_def("full_pipeline").asset_layer.selected_asset_keys}
    assert set(mats) == assets
    fs = cluster.fs()
    for asset, md in mats.items():
        path = str(md.get("path", ""))
        assert path.startswith(cluster.home + "/artifacts/"), (asset, path)
        assert fs.exists(path.removeprefix("s3://") + "/manifest.json"), path
    # nothing under a local LINEAGE_HOME: the workers' and the runner's directories hold only their
    # DAGSTER_HOME, logs and scratch (staging and verified read copies)
    for d in [cluster.runner, *(w.workdir for w in cluster.workers.values())]:
        top = {p.name for p in d.iterdir()}
        assert top <= {"dagster_home", "scratch", "worker.log"}, (d, top)
    assert not (REPO / "s3:").exists()
    # the bucket: every object and byte this home holds (figures for the README)
    objects = fs.find(cluster.home_key, detail=True)
    cluster.state["objects"] = len(objects)
    cluster.state["bytes"] = sum(o["size"] for o in objects.values())
    logs = fs.find(f"{cluster.s3.bucket}/dagster-logs")
    assert logs, "compute logs are uploaded to the bucket"
    print(f"\n[cluster] full_pipeline on two workers: {cluster.state['run_s']:.1f} s; bucket: "
          f"{cluster.state['objects']} objects, {cluster.state['bytes']} bytes; compute-log objects: {len(logs)}")


def test_lineage_sql_and_verify_through_the_bucket(cluster, tmp_path):
    sql = ("with recursive up(bundle, asset, data_version) as (select data_version, asset, data_version from "
           "asset_versions where asset = 'onnx_bundle' union select up.bundle, e.upstream_asset, e.upstream_version "
           "from up join lineage_edges e on e.asset = up.asset and e.data_version = up.data_version) "
           "select distinct bundle, data_version as raw_docs_version from up where asset = 'raw_docs' order by 1, 2")
    out = cluster.lineage("stats", sql, "--format", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]  # NDJSON
    instance = cluster.instance()
    bundle = instance.get_latest_materialization_event(dg.AssetKey("onnx_bundle")).asset_materialization
    raw = instance.get_latest_materialization_event(dg.AssetKey("raw_docs")).asset_materialization
    assert {"bundle": bundle.tags["dagster/data_version"], "raw_docs_version": raw.tags["dagster/data_version"]} in rows
    verify = cluster.lineage("verify", f"onnx_bundle@{bundle.tags['dagster/data_version']}")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]


def test_second_run_is_all_cache_hits(cluster):
    t0 = time.monotonic()
    out = cluster.execute()
    cluster.state["cached_run_s"] = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-3000:]
    instance = cluster.instance()
    run = _latest_run(instance)
    mats = _materializations(instance, run.run_id)
    assert mats and all(md.get("cache_hit") is True for md in mats.values()), \
        {a: md.get("cache_hit") for a, md in mats.items()}


def test_new_landing_object_ingests_and_retrains(cluster):
    instance = cluster.instance()
    before = instance.get_latest_materialization_event(dg.AssetKey("lm_checkpoint")).asset_materialization
    log = cluster.runner / "daemon.log"
    with open(log, "ab") as f:
        daemon = subprocess.Popen([str(VENV_BIN / "dagster-daemon"), "run", "-m", "definitions"], cwd=REPO,
                                  env=cluster.runner_env, stdout=f, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        t0 = time.time()
        # more sample documents, not in the first corpus (made-up short notes would all be filtered out by
        # the quality rules: a new cleaned_chunks version, but no new training data, and rightly no retraining)
        first = set(corpus_lines())
        extra = [line for line in corpus_lines(240) if line not in first]
        assert len(extra) >= 40
        cluster.fs().pipe_file(cluster.home_key + "/landing/more/sample_more.jsonl", ("\n".join(extra) + "\n").encode())
        deadline = time.monotonic() + 2 * RUN_TIMEOUT
        ingest = train = None
        while time.monotonic() < deadline and train is None:
            assert daemon.poll() is None, log.read_text(errors="replace")[-3000:]
            runs = {job: [r.dagster_run for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job))
                          if r.create_timestamp.timestamp() >= t0] for job in ("ingest_job", "train_job")}
            for r in runs["ingest_job"]:
                assert r.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED), \
                    failure_text(instance, r.run_id)[-4000:]
                if r.status == dg.DagsterRunStatus.SUCCESS:
                    ingest = r
            train = runs["train_job"][0] if runs["train_job"] else None
            time.sleep(2)
        # the landing sensor saw the new object and ingested it; the retrain sensor, reading the catalog in
        # the bucket, requested training of the models whose inputs changed
        assert ingest is not None and ingest.tags.get("lineage/trigger") == "landing_sensor", ingest
        assert train is not None and train.tags.get("lineage/trigger") == "retrain_sensor", train
        raw = instance.get_latest_materialization_event(dg.AssetKey("raw_docs")).asset_materialization
        assert "landing:more/sample_more.jsonl" in raw.metadata["upstream"].value
        assert before.tags["dagster/data_version"]
    finally:
        stop_pid(daemon, 20)
