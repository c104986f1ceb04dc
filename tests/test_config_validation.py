"""Bad run config is refused at launch, before any step runs, naming the field path (issue 15).

The five profiles of the issue (each the debug profile with one bad value): a Jaccard threshold
above 1, a vocabulary smaller than the byte alphabet, no validation split, a negative learning
rate, and (our choice) a chunk overlap as large as the chunk.
"""

import copy
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ml.cli import main as lineage
from ml.settings import MIN_VOCAB, SPLIT_STAGES, validate_profile
from tests.conftest import REPO, subprocess_env

DEBUG = yaml.safe_load((REPO / "configs" / "debug.yaml").read_text())


def _with(**changes) -> dict:
    """The debug profile with ops.<op>.config.<path> = value for each change (path dotted)."""
    profile = copy.deepcopy(DEBUG)
    for key, value in changes.items():
        op, *path = key.split("__")
        cfg = profile["ops"][op]["config"]
        for part in path[:-1]:
            cfg = cfg.setdefault(part, {})
        cfg[path[-1]] = value
    return profile


def _val_ratio_zero() -> dict:
    profile = copy.deepcopy(DEBUG)
    for name in SPLIT_STAGES:
        if name in profile["ops"]:
            profile["ops"][name]["config"]["val_ratio"] = 0
    return profile


BAD = {
    "jaccard_threshold": (_with(cleaned_chunks__jaccard_threshold=1.5), "ops.cleaned_chunks.config.jaccard_threshold"),
    "vocab_size": (_with(tokenizer__vocab_size=10), "ops.tokenizer.config.vocab_size"),
    "val_ratio": (_val_ratio_zero(), "ops.tokenizer.config.val_ratio"),
    "negative_lr": (_with(lora_adapter__train__lr=-0.001), "ops.lora_adapter.config.train.lr"),
    "overlap": (_with(cleaned_chunks__overlap=256), "ops.cleaned_chunks.config: overlap (256) must be smaller"),
}


def test_shipped_profiles_pass_and_min_vocab_matches_the_tokenizer():
    from ml.tokenizer import MIN_VOCAB as TOKENIZER_MIN

    assert MIN_VOCAB == TOKENIZER_MIN
    for name in ("debug.yaml", "base.yaml", "hpc.yaml"):
        assert validate_profile(yaml.safe_load((REPO / "configs" / name).read_text())) == [], name


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_profile_is_named_by_validate_config_and_refused_at_launch(case, tmp_path, capsys, home):
    from definitions import defs

    profile, field = BAD[case]
    errors = validate_profile(profile)
    assert any(e.startswith(field) or field in e for e in errors), errors
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(profile))
    assert lineage(["validate-config", "--no-hardware-check", str(f)]) == 1
    assert field in capsys.readouterr().err

    started = time.monotonic()
    with dg.instance_for_test() as instance:
        with pytest.raises(Exception) as err:
            defs.resolve_job_def("full_pipeline").execute_in_process(run_config=profile, instance=instance)
        assert not instance.get_runs()  # refused while the run was being created: not one step ran
    assert time.monotonic() - started < 30
    assert field in str(err.value.__cause__ or err.value)


def test_values_at_the_threshold_pass_and_just_past_it_fail():
    assert validate_profile(_with(cleaned_chunks__jaccard_threshold=1.0)) == []
    assert validate_profile(_with(cleaned_chunks__overlap=255)) == []
    assert validate_profile(_with(tokenizer__vocab_size=MIN_VOCAB)) == []
    assert validate_profile(_with(tokenizer__vocab_size=MIN_VOCAB - 1))
    assert validate_profile(_with(cleaned_chunks__jaccard_threshold=1.0001))
    # split settings must agree across stages (a document in the same split everywhere)
    errors = validate_profile(_with(sft_dataset__seed=7))
    assert errors == ["ops.sft_dataset.config.seed: 7 differs from ops.embedding_dataset.config.seed (1234); "
                      "every corpus and dataset stage must split documents alike"]
    errors = validate_profile(_with(ner_dataset__test_ratio=0.1))  # the test split too
    assert errors == ["ops.ner_dataset.config.test_ratio: 0.1 differs from ops.embedding_dataset.config.test_ratio "
                      "(0.05); every corpus and dataset stage must split documents alike"]
    assert validate_profile(_with(**{f"{s}__test_ratio": 0.0 for s in SPLIT_STAGES})) == []  # no test split: allowed
    held_out = validate_profile(_with(**{f"{s}__{k}": 0.5 for s in SPLIT_STAGES for k in ("val_ratio", "test_ratio")}))
    assert held_out and all("val_ratio + test_ratio" in e for e in held_out)  # nothing left to train on


@pytest.mark.slow
def test_dagster_job_execute_fails_before_any_step_naming_the_field(home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"ops": {"cleaned_chunks": {"config": {"jaccard_threshold": 1.5}}}}))
    run = subprocess.run([sys.executable, "-m", "dagster", "job", "execute", "-m", "definitions", "-j", "ingest_job",
                          "-c", str(REPO / "configs" / "debug.yaml"), "-c", str(bad)],
                         cwd=REPO, env=subprocess_env(home), capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "ops.cleaned_chunks.config.jaccard_threshold: Input should be less than or equal to 1" in out
    assert "STEP_START" not in out and "RUN_START" not in out
    assert not list((home / "artifacts").glob("*/*")) if (home / "artifacts").exists() else True
