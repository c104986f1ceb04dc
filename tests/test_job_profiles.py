"""One run-config profile serves every job: each job cuts the profile's ops to its own."""

import dagster as dg
import pytest
import yaml

from definitions import defs
from tests.conftest import REPO

JOBS = ("ingest_job", "train_job", "export_job", "full_pipeline")


@pytest.mark.parametrize("profile", ["debug.yaml", "base.yaml"])
@pytest.mark.parametrize("job_name", JOBS)
def test_every_job_accepts_a_whole_profile(job_name, profile):
    config = yaml.safe_load((REPO / "configs" / profile).read_text())
    assert dg.validate_run_config(defs.resolve_job_def(job_name), config)


def test_a_bad_field_is_still_rejected_with_its_name():
    config = yaml.safe_load((REPO / "configs" / "debug.yaml").read_text())
    config["ops"]["raw_docs"]["config"]["max_doc_bytes"] = "lots"
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_doc_bytes"):
        dg.validate_run_config(defs.resolve_job_def("ingest_job"), config)


@pytest.mark.parametrize("job_name", JOBS)
def test_the_moe_overlay_on_the_debug_profile_is_accepted_by_every_job(job_name):
    from dagster_shared.yaml_utils import merge_yamls

    from ml.train.config import validate_run_config

    config = merge_yamls([str(REPO / "configs" / "debug.yaml"), str(REPO / "configs" / "moe.yaml")])
    assert config["ops"]["lm_checkpoint"]["config"]["model"]["arch"] == "mixtral"
    assert dg.validate_run_config(defs.resolve_job_def(job_name), config)
    assert validate_run_config(config, check_hardware=False)[0] == []
