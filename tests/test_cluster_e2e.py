"""The cluster end to end, on 127.0.0.1, with real servers started here in temporary directories:
PostgreSQL (the Dagster instance), redis-server (the Celery broker and result backend), SeaweedFS's
S3 gateway (LINEAGE_HOME=s3://..., compute logs) and two Celery workers, each in its own working
directory with its own scratch space and DAGSTER_HOME (which holds only configs/cluster/dagster.yaml).

One cluster serves every test of the module, in order, and the runs share their work (steps whose
inputs did not change are cache hits):
1. full_pipeline (`dagster job execute -c tiny.yaml -c configs/cluster/executor.yaml`: the overlay
   moves the profile onto Celery) runs until worker w2 (queues dagster and gpu) is halfway through
   uploading onnx_bundle's version, where a fault point pauses it; the test SIGKILLs w2 from outside
   (the process group: Celery's main process and its pool child); the run notices that w2 no longer
   answers and fails the lost step (its gpu pool slot freed: README "A lost worker"); readers see no
   manifest-less version and `lineage gc` lists the dead writer's lease and half upload; a
   replacement w2 is started;
2. the same job again completes, on both workers (gpu queue: w2 only), every version in the bucket,
   nothing in a local home; only the killed step and the one after it are computed again;
3. the README's lineage SQL reaches raw_docs from the bundle through the object-store catalog, and
   `lineage verify` passes on the bundle read from the bucket;
4. a second run is all cache hits (dagster-daemon starts meanwhile, against the PostgreSQL instance);
5. a new object in the landing prefix (more DPO pairs, landing/preferences/) leads to an ingest_job
   run (landing_sensor: every document stage a cache hit, a new preference_dataset) and a train_job
   run of exactly dpo_adapter (retrain_sensor), both succeeding on the workers, and a new
   dpo_adapter version in the bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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
OVERLAY = REPO / "configs" / "cluster" / "executor.yaml"
RUN_TIMEOUT = 420  # seconds for one `dagster job execute` (a 2-core CI machine, tiny models)
WORKER_LOST_S = 8
KILLED = "onnx_bundle"  # the step killed mid-upload: the last but one, so the rerun shares the rest


def _profile() -> dict:
    """The automation test's tiny models (its `execution: in_process` included: the cluster overlay
    must win over it) with the export gates opened: this test is about where steps run and where
    versions go; model quality has its own tests."""
    profile = json.loads(json.dumps(TINY))
    ops = profile["ops"]
    for name, op in ops.items():  # the training checks ask only that the train loss fell at all
        if "train" in op["config"]:
            op["config"]["checks"] = {"min_loss_drop": 0.0}
    ops["onnx_bundle"]["config"].update(int4=False, thresholds={
        "int8_embedding_mean_cosine": 0.0, "int8_embedding_min_cosine": 0.0, "int8_lm_top1_agreement": 0.0,
        "int8_classifier_agreement": 0.0, "int8_ranker_top1_agreement": 0.0, "int8_ranker_rank_correlation": 0.0,
        "int8_token_agreement": 0.0})
    profile["resources"] = yaml.safe_load((REPO / "configs" / "debug.yaml").read_text())["resources"]
    # a step whose worker stops answering fails after this long (default 60 s): the killed worker below
    profile["execution"]["config"]["celery"] = {"worker_lost_seconds": WORKER_LOST_S}
    return profile


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.pg = start_postgres(root / "pg")
        self.redis = start_redis(root / "redis")
        self.s3 = start_seaweedfs(root / "s3")
        self.home = self.s3.url("lh")  # s3://bucket/lh
        self.home_key = self.home.removeprefix("s3://")  # bucket/lh, as the s3fs client names it
        self.profile = root / "tiny.yaml"
        self.profile.write_text(yaml.safe_dump(_profile()))
        self.env = {**os.environ, **self.s3.env(),
                    "LINEAGE_HOME": self.home, "LINEAGE_PG_URL": self.pg.url,
                    "LINEAGE_LOG_BUCKET": self.s3.bucket, "LINEAGE_LOG_PREFIX": "dagster-logs",
                    "LINEAGE_CELERY_BROKER": self.redis.db(0), "LINEAGE_CELERY_BACKEND": self.redis.db(1),
                    # the sensors' runs: the same two files, merged as `-c A -c B` merges them
                    "LINEAGE_RUN_CONFIG": f"{self.profile}{os.pathsep}{OVERLAY}", "LINEAGE_SENSOR_INTERVAL": "1",
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

    def start_workers(self, *specs: tuple[str, tuple[str, ...], dict]) -> None:
        """Start workers (name, queues, extra env) side by side; each in its own dir with its own scratch."""
        def one(spec):
            name, queues, extra = spec
            wdir = self.root / name
            env = {**self.env, "LINEAGE_SCRATCH": str(wdir / "scratch"), **extra}
            return name, start_celery_worker(name, wdir, env, queues)

        if not self.workers:  # the instance's schema exists before workers open it at once (else both
            # create it and one fails: 'type "jobs" already exists'), as demo.sh does for SQLite
            subprocess.run([str(VENV_BIN / "dagster"), "instance", "migrate"], cwd=REPO, env=self.runner_env,
                           check=True, capture_output=True, timeout=120)
        with ThreadPoolExecutor(len(specs)) as pool:
            for name, worker in pool.map(one, specs):
                self.workers[name] = worker

    def instance(self) -> dg.DagsterInstance:
        with _env(self.runner_env):
            return dg.DagsterInstance.get()

    def _execute_cmd(self, job: str) -> list[str]:
        return [str(VENV_BIN / "dagster"), "job", "execute", "-m", "definitions", "-j", job,
                "-c", str(self.profile), "-c", str(OVERLAY)]

    def execute(self, job: str = "full_pipeline") -> subprocess.CompletedProcess:
        return subprocess.run(self._execute_cmd(job), cwd=REPO, env=self.runner_env, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT)

    def start(self, job: str, log: Path) -> subprocess.Popen:
        with open(log, "ab") as f:
            return subprocess.Popen(self._execute_cmd(job), cwd=REPO, env=self.runner_env, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def lineage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "lineage"), *args], cwd=self.runner, env=self.runner_env,
                              capture_output=True, text=True, timeout=300)

    def fs(self):
        return self.s3.client()

    def stop(self) -> None:
        if "daemon" in self.state:
            stop_pid(self.state.pop("daemon"), 20)
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
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="lineage-cluster-"))
    c = Cluster(root)
    try:
        # the sample corpus (and DPO pairs, too few derive from it) dropped into the object-store landing zone
        fs = c.fs()
        landing = c.home_key + "/landing"
        fs.pipe_file(f"{landing}/preferences/prefs.jsonl", ("\n".join(preference_lines()) + "\n").encode())
        fs.pipe_file(f"{landing}/docs.jsonl", ("\n".join(corpus_lines()) + "\n").encode())
        c.state["servers_s"] = time.monotonic() - t0
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
        print(f"\n[cluster] phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in c.state.items()
                                                     if k.endswith("_s")) + f"; load {os.getloadavg()[0]:.1f}")


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


def _wait(ok, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the run exited ({proc.returncode}) first:\n"
                                 + (log.read_text(errors="replace")[-5000:] if log else ""))
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_worker_killed_mid_upload_leaves_no_visible_partial_version(cluster):
    t0 = time.monotonic()
    pause = cluster.root / "paused"
    cluster.start_workers(("w1", ("dagster",), {}),
                          # w2 takes the default queue and the gpu queue; its pool process stops halfway
                          # through uploading onnx_bundle's version (lease and half the files in the bucket)
                          ("w2", ("dagster", "gpu"), {"LINEAGE_FAULTS": f"store.during_upload@{KILLED}=pause:{pause}"}))
    cluster.state["workers_s"] = time.monotonic() - t0
    log = cluster.runner / "killed-run.log"
    runner = cluster.start("full_pipeline", log)
    try:
        _wait(lambda: pause.is_dir() and any(pause.iterdir()), RUN_TIMEOUT, f"w2 paused in {KILLED}'s upload",
              runner, log)
        writer = int(next(pause.iterdir()).name)  # the pool process, mid-write
        fs = cluster.fs()
        art = cluster.home_key + "/artifacts"
        leases = [k for k in fs.find(f"{art}/_leases") if k.rsplit("/", 1)[-1].startswith(f"{KILLED}~")]
        assert len(leases) == 1, leases
        version = leases[0].rsplit("/", 1)[-1].split("~")[1]
        lease = json.loads(fs.cat_file(leases[0]))
        assert lease["pid"] == writer and lease["host"] == HOST
        half = fs.find(f"{art}/{KILLED}/{version}")
        assert half and not any(k.endswith("/manifest.json") for k in half), half  # half uploaded, no manifest

        w2 = cluster.workers.pop("w2")
        w2.kill()  # SIGKILL to the worker's process group: Celery's main process and its pool child
        _wait(lambda: not Path(f"/proc/{writer}").exists(), 30, "the killed writer gone")
        # nobody will answer for the lost step: the run notices (its pings to w2 go unanswered) and fails
        runner.wait(WORKER_LOST_S + 60)
        cluster.state["killed_run_s"] = time.monotonic() - t0
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(30)
    assert runner.returncode != 0, log.read_text(errors="replace")[-3000:]

    instance = cluster.instance()
    run = _latest_run(instance)
    assert run.status == dg.DagsterRunStatus.FAILURE
    lost = [e for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE) if e.step_key == KILLED]
    assert lost and f"Celery worker w2@{HOST} stopped answering" in lost[0].dagster_event.event_specific_data.error.message
    # the lost step's gpu pool slot was freed with its failure: the next run's gpu steps need it
    gpu = instance.event_log_storage.get_concurrency_info("gpu")
    assert run.run_id not in gpu.active_run_ids and gpu.active_slot_count == 0, gpu

    # readers see no partial version: every visible version verifies, the half upload is no version
    verify = cluster.lineage("verify", "--all")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]
    partial = cluster.lineage("verify", f"{KILLED}@{version}")
    assert partial.returncode != 0, partial.stdout[-2000:]
    # the dead writer's leftovers: its lease and its half upload, listed by gc's dry run
    gc = cluster.lineage("gc")
    assert gc.returncode == 0, gc.stderr[-3000:]
    assert f"_leases/{KILLED}~{version}~{writer}~" in gc.stdout and f"pid {writer} on this host is dead" in gc.stdout, \
        gc.stdout
    assert f"{KILLED}/{version}" in gc.stdout, gc.stdout
    assert fs.find(f"{art}/{KILLED}/{version}"), "a dry run removes nothing"
    cluster.state["partial_version"] = version
    cluster.start_workers(("w2", ("dagster", "gpu"), {}))  # the replacement, clean


def test_the_job_again_completes_on_both_workers_into_the_bucket(cluster):
    t0 = time.monotonic()
    out = cluster.execute()
    cluster.state["rerun_s"] = time.monotonic() - t0
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
    # the killed run's work is reused: only the killed step and the one after it are computed
    assert {a for a, md in mats.items() if md.get("cache_hit") is not True} == {KILLED, "hf_release"}, \
        {a: md.get("cache_hit") for a, md in mats.items()}
    fs = cluster.fs()
    for asset, md in mats.items():
        path = str(md.get("path", ""))
        assert path.startswith(cluster.home + "/artifacts/"), (asset, path)
        assert fs.exists(path.removeprefix("s3://") + "/manifest.json"), path
    # nothing under a local LINEAGE_HOME: the workers' and the runner's directories hold only their
    # DAGSTER_HOME, logs and scratch (staging and verified read copies)
    for d in [cluster.runner, *(w.workdir for w in cluster.workers.values())]:
        top = {p.name for p in d.iterdir()}
        assert top <= {"dagster_home", "scratch", "worker.log", "killed-run.log"}, (d, top)
    assert not (REPO / "s3:").exists()
    # the bucket: every object and byte this home holds (figures for the README)
    objects = fs.find(cluster.home_key, detail=True)
    cluster.state["objects"] = len(objects)
    cluster.state["bytes"] = sum(o["size"] for o in objects.values())
    logs = fs.find(f"{cluster.s3.bucket}/dagster-logs")
    assert logs, "compute logs are uploaded to the bucket"
    print(f"\n[cluster] rerun after the kill: {cluster.state['rerun_s']:.1f} s; bucket: "
          f"{cluster.state['objects']} objects, {cluster.state['bytes']} bytes; compute-log objects: {len(logs)}; "
          f"{KILLED} {mats[KILLED]['path'].rsplit('/', 1)[-1]} (killed upload: {cluster.state['partial_version']})")


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


def _start_daemon(cluster) -> subprocess.Popen:
    """dagster-daemon (sensors, run queue, run monitoring) against the PostgreSQL instance."""
    if "daemon" not in cluster.state:
        log = cluster.runner / "daemon.log"
        with open(log, "ab") as f:
            cluster.state["daemon"] = subprocess.Popen(
                [str(VENV_BIN / "dagster-daemon"), "run", "-m", "definitions"], cwd=REPO, env=cluster.runner_env,
                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    return cluster.state["daemon"]


def test_second_run_is_all_cache_hits(cluster):
    # the daemon loads the code location while this run goes on; with the landing zone and the models
    # unchanged its sensors request nothing (the next test drops a new object)
    _start_daemon(cluster)
    t0 = time.monotonic()
    out = cluster.execute()
    cluster.state["cached_run_s"] = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-3000:]
    instance = cluster.instance()
    run = _latest_run(instance)
    assert run.job_name == "full_pipeline" and run.tags.get("lineage/trigger") is None
    mats = _materializations(instance, run.run_id)
    assert mats and all(md.get("cache_hit") is True for md in mats.values()), \
        {a: md.get("cache_hit") for a, md in mats.items()}
    # where a cached run's time goes: one Celery task per step (figures for the closing note)
    starts, ends = {}, {}
    for e in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}):
        (starts if e.dagster_event.event_type == dg.DagsterEventType.STEP_START else ends)[e.step_key] = e.timestamp
    took = sorted(ends[k] - starts[k] for k in ends if k in starts)
    print(f"\n[cluster] cached run: {cluster.state['cached_run_s']:.1f} s, {len(took)} steps, step time "
          f"median {took[len(took) // 2]:.1f} s, sum {sum(took):.0f} s")


def test_new_landing_object_ingests_and_retrains(cluster):
    """New DPO pairs land (landing/preferences/): the landing sensor requests an ingest_job run of
    preference_dataset alone (no document file changed) and it builds a new version; the retrain sensor, reading
    the catalog and the instance, requests a train_job of exactly the model whose input changed
    (dpo_adapter). Both runs must succeed on the workers."""
    t_start = time.monotonic()
    instance = cluster.instance()
    before = instance.get_latest_materialization_event(dg.AssetKey("dpo_adapter")).asset_materialization
    log = cluster.runner / "daemon.log"
    daemon = _start_daemon(cluster)
    try:
        t0 = time.time()
        first = set(preference_lines())
        extra = [line for line in preference_lines(80) if line not in first]
        assert len(extra) >= 20
        cluster.fs().pipe_file(cluster.home_key + "/landing/preferences/more_prefs.jsonl",
                               ("\n".join(extra) + "\n").encode())
        deadline = time.monotonic() + 2 * RUN_TIMEOUT
        done: dict[str, dg.DagsterRun] = {}
        while time.monotonic() < deadline and len(done) < 2:
            assert daemon.poll() is None, log.read_text(errors="replace")[-3000:]
            for job in ("ingest_job", "train_job"):
                for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job)):
                    run = r.dagster_run
                    if r.create_timestamp.timestamp() < t0:
                        continue
                    assert run.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED), \
                        f"{job}: " + failure_text(instance, run.run_id)[-4000:]
                    if run.status == dg.DagsterRunStatus.SUCCESS:
                        done[job] = run
            time.sleep(1)
        assert set(done) == {"ingest_job", "train_job"}, (done, log.read_text(errors="replace")[-3000:])
    finally:
        stop_pid(daemon, 20)  # its process group: a run it launched since (export_job) goes with it
        cluster.state.pop("daemon", None)
    cluster.state["sensors_s"] = time.monotonic() - t_start
    ingest, train = done["ingest_job"], done["train_job"]
    assert ingest.tags.get("lineage/trigger") == "landing_sensor", ingest.tags
    assert train.tags.get("lineage/trigger") == "retrain_sensor", train.tags
    ingested = _materializations(instance, ingest.run_id)
    assert set(ingested) == {"preference_dataset"} and ingested["preference_dataset"].get("cache_hit") is not True
    assert ingest.asset_selection == {dg.AssetKey("preference_dataset")}
    prefs = instance.get_latest_materialization_event(dg.AssetKey("preference_dataset")).asset_materialization
    assert "preferences/more_prefs.jsonl" in json.dumps(prefs.metadata["upstream"].value)
    # the retrain ran on the gpu worker and wrote a new dpo_adapter version into the bucket
    assert set(_celery_workers(instance, train.run_id).values()) == {f"w2@{HOST}"}
    retrained = _materializations(instance, train.run_id)
    assert set(retrained) == {"dpo_adapter"}, retrained.keys()
    after = instance.get_latest_materialization_event(dg.AssetKey("dpo_adapter")).asset_materialization
    assert after.tags["dagster/data_version"] != before.tags["dagster/data_version"]
    path = str(retrained["dpo_adapter"]["path"])
    assert path.startswith(cluster.home + "/artifacts/dpo_adapter/")
    assert cluster.fs().exists(path.removeprefix("s3://") + "/manifest.json")
