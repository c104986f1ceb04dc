"""A fully cached run pays for no heavy import: its assets are cache hits and its quality checks
report recorded results, so neither torch, transformers nor Great Expectations is imported (each
costs seconds, as much as the rest of a cached run). The first run, which computes, imports them."""

import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, subprocess_env

SELECT = "raw_docs,cleaned_chunks,tokenizer,embedding_dataset,embedding_checkpoint"
HEAVY = ("torch", "transformers", "great_expectations")


def _materialize(env, config) -> tuple[set[str], str]:
    """Materialize SELECT (with its checks) in one process; the heavy top-level modules it imported."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "dagster", "asset", "materialize", "-m", "definitions",
                        "--select", SELECT, "-c", str(config)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # -X importtime lists every module imported, indented under the import that pulled it in
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\w+)$", r.stderr, flags=re.M))
    return imported & set(HEAVY), r.stderr


@pytest.mark.slow
def test_a_cached_run_imports_no_torch_transformers_or_gx(home, tmp_path):
    env = subprocess_env(home)
    subprocess.run([sys.executable, "-m", "ml.cli", "sample-corpus", "--limit", "300"], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)
    debug = yaml.safe_load((REPO / "configs" / "debug.yaml").read_text())
    ops = {k: v for k, v in debug["ops"].items() if k in SELECT.split(",")}
    ops["embedding_checkpoint"]["config"]["train"].update(max_steps=20, eval_every=10, save_every=10, log_every=5)
    ops["embedding_checkpoint"]["config"]["checks"] = {"min_loss_drop": 0.0}
    config = tmp_path / "profile.yaml"
    config.write_text(yaml.safe_dump({"ops": ops, "resources": debug["resources"], "execution": debug["execution"]}))

    first, _ = _materialize(env, config)
    assert first == set(HEAVY)  # computing: the tokenizer, the training and the checks need them

    second, log = _materialize(env, config)
    assert "cache hit" in log
    assert second == set(), f"a cached run imported {sorted(second)}"
