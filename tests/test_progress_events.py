"""Demo progress under load: every step end, materialization and check evaluation of a run is in
Dagster's event log, and ``python -m jobs.progress`` (what demo.sh shows) prints every one of them.

The console is not the record: each step's stdout/stderr is captured by Dagster and mirrored back
by a ``tail -F`` process that is stopped when the step ends, so a step's last lines (its
STEP_SUCCESS, its last check evaluations) can miss the console on a loaded machine. This test runs
a multiprocess job while CPU burners load the machine and counts the events in the event log, in
the progress output and (for the record, not asserted) on the console.
"""

import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from tests.conftest import REPO, subprocess_env

ASSETS, CHECKS = 6, 4

JOB = textwrap.dedent(f"""
    import sys
    import dagster as dg

    def make(i):
        specs = [dg.AssetCheckSpec(f"check_{{j}}", asset=f"a{{i}}") for j in range({CHECKS})]

        @dg.asset(name=f"a{{i}}", check_specs=specs)
        def a(context):
            for k in range(50):  # output to capture, as a real step's progress lines
                print(f"a{{i}} line {{k}} " + "x" * 200)
                context.log.info(f"a{{i}} log {{k}}")
            return dg.MaterializeResult(
                metadata={{"cache_hit": False, "data_version": f"{{i:016x}}"}},
                check_results=[dg.AssetCheckResult(check_name=f"check_{{j}}", passed=True) for j in range({CHECKS})])
        return a

    assets = [make(i) for i in range({ASSETS})]
    loaded = dg.define_asset_job("loaded", selection=dg.AssetSelection.all(),
                                 executor_def=dg.multiprocess_executor.configured({{"max_concurrent": 4}}))
    defs = dg.Definitions(assets=assets, jobs=[loaded])
""")


def _burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@pytest.mark.slow
def test_loaded_run_every_event_in_the_log_and_in_the_progress(home, tmp_path):
    defs = tmp_path / "loaded_defs.py"
    defs.write_text(JOB)
    env = subprocess_env(home)
    tag = f"test-{os.getpid()}-{time.time_ns()}"
    # as demo.sh does: the instance's storage exists before the job and the reader open it at once
    subprocess.run([sys.executable, "-m", "dagster", "instance", "migrate"], env=env, cwd=tmp_path,
                   check=True, capture_output=True)
    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(max(2, os.cpu_count() or 2))]
    for b in burners:
        b.start()
    try:
        with open(tmp_path / "console.log", "w") as console:
            job = subprocess.Popen(
                [sys.executable, "-m", "dagster", "job", "execute", "-f", str(defs), "-j", "loaded",
                 "--tags", json.dumps({"lineage/launch": tag})],
                cwd=tmp_path, env=env, stdout=console, stderr=subprocess.STDOUT)
            progress = subprocess.run(
                [sys.executable, "-m", "jobs.progress", "--tag", f"lineage/launch={tag}", "--pid", str(job.pid),
                 "--poll", "0.2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            assert job.wait(timeout=600) == 0
    finally:
        stop.set()
        for b in burners:
            b.join(timeout=10)
    assert progress.returncode == 0, progress.stderr

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        run = instance.get_runs(filters=dg.RunsFilter(tags={"lineage/launch": tag}))[0]

        def count(kind):
            return len(instance.get_records_for_run(run.run_id, of_type=kind, limit=10_000).records)

        logged = {kind: count(kind) for kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.ASSET_MATERIALIZATION,
                                                 DagsterEventType.ASSET_CHECK_EVALUATION)}
    # the event log lost nothing
    assert logged == {DagsterEventType.STEP_SUCCESS: ASSETS, DagsterEventType.ASSET_MATERIALIZATION: ASSETS,
                      DagsterEventType.ASSET_CHECK_EVALUATION: ASSETS * CHECKS}

    # the progress shows every one of them, once
    out = progress.stdout.splitlines()
    done = sorted(re.search(r" done   (a\d+) ", line).group(1) for line in out if " done   " in line)
    assert done == sorted(f"a{i}" for i in range(ASSETS))
    assets = [line for line in out if " asset  " in line]
    assert len(assets) == ASSETS and all(line.endswith("  computed") for line in assets)
    assert any(f"a3@{3:016x}  computed" in line for line in assets)  # asset, version, computed
    checks = {re.search(r" check  (a\d+\.check_\d+)  passed", line).group(1) for line in out if " check  " in line}
    assert len(checks) == ASSETS * CHECKS == sum(" check  " in line for line in out)
    assert out[-1].endswith("run    succeeded")

    # the console, for the record: whatever it shows is at most what the event log has
    console = (tmp_path / "console.log").read_text(errors="replace")
    on_console = len(re.findall(r" - STEP_SUCCESS - ", console))
    print(f"STEP_SUCCESS: event log {ASSETS}, progress {len(done)}, console {on_console}")
    assert on_console <= ASSETS
