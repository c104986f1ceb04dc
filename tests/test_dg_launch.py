"""`dg launch`, the command line Dagster recommends, works on this checkout (pyproject.toml
[tool.dg] makes it a dg project), beside `dagster job execute`."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ml.catalog import Catalog
from tests.conftest import REPO, subprocess_env


def _dg() -> str:
    dg = shutil.which("dg", path=str(Path(sys.executable).parent))
    assert dg, "`dg` comes with dagster-dg-cli (the dev and dg extras): pip install -e '.[dev]'"
    return dg


@pytest.mark.slow
def test_dg_launch_assets_and_a_job_with_the_debug_profile(home):
    env = subprocess_env(home)
    subprocess.run([sys.executable, "-m", "ml.cli", "sample-corpus", "--limit", "300"], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)

    # an asset selection (raw_docs and its checks)
    r = subprocess.run([_dg(), "launch", "--assets", "raw_docs"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    catalog = Catalog(home)
    assert catalog.latest_version_of("raw_docs") is not None
    assert catalog.query("SELECT count(*) FROM check_results WHERE asset = 'raw_docs'").item() > 0

    # a job with the whole debug profile, as the README shows (its executor: in_process)
    r = subprocess.run([_dg(), "launch", "--job", "ingest_job", "--config", "configs/debug.yaml"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "RUN_SUCCESS" in out and "Executing steps in process" in out
    made = set(catalog.query("SELECT DISTINCT asset FROM asset_versions")["asset"].to_list())
    assert {"raw_docs", "cleaned_chunks", "tokenizer", "tokenized_corpus", "sft_dataset"} <= made
    # raw_docs' landing files did not change: the job's raw_docs is a cache hit of the first launch
    hits = catalog.query("SELECT cache_hit FROM asset_versions WHERE asset = 'raw_docs' ORDER BY created_at")
    assert hits["cache_hit"].to_list() == [False, True]
