"""raw_docs and cleaned_chunks as graph-backed assets: one unit step per landing file, a small merge
step, units reused across landings (a new file computes and merges that file only), and every unit
step running in its own process under the multiprocess executor (raw_docs only there: the same
mechanism, and every step process imports the code location)."""

import dagster as dg
import pytest

from assets import cleaned_chunks, raw_docs
from tests.conftest import write_lines
from tests.helpers.curation import FOURTH_PROSE, OTHER_PROSE, PROSE, RESOURCES, THIRD_PROSE, doc_line


def _materialize(instance, **kw):
    result = dg.materialize([raw_docs, cleaned_chunks], instance=instance, resources=RESOURCES, **kw)
    assert result.success
    mats = {e.asset_key.to_user_string(): e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()}
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return mats, steps, logs


def test_one_unit_step_per_landing_file_and_a_new_file_costs_only_itself(home):
    write_lines(home / "landing" / "a.jsonl", [doc_line(0, PROSE), doc_line(1, OTHER_PROSE)])
    write_lines(home / "landing" / "b.jsonl", [doc_line(2, THIRD_PROSE), doc_line(3, PROSE.upper())])
    with dg.instance_for_test() as instance:
        mats, steps, _ = _materialize(instance)
        assert {"raw_docs.raw_docs_unit[u00000]", "raw_docs.raw_docs_unit[u00001]", "raw_docs.raw_docs_assemble",
                "cleaned_chunks.cleaned_chunks_unit[u00000]", "cleaned_chunks.cleaned_chunks_unit[u00001]",
                "cleaned_chunks.cleaned_chunks_merge"} <= steps
        md = mats["cleaned_chunks"].metadata
        assert md["decisions"].value == {"kept": 3, "exact_duplicate": 1, "near_duplicate": 0, "filtered": 0}

        write_lines(home / "landing" / "c.jsonl", [doc_line(4, FOURTH_PROSE), doc_line(5, OTHER_PROSE.lower())])
        mats, steps, logs = _materialize(instance)
        assert "cleaned_chunks.cleaned_chunks_unit[u00002]" in steps
        reused = [m for m in logs if "reused" in m and "unit" in m]
        computed = [m for m in logs if "computed" in m and "unit" in m]
        assert len(reused) == 4 and len(computed) == 2  # a.jsonl, b.jsonl: both stages' units reused
        assert any("2 of 3 unit(s) decided by an earlier run; merging 1" in m for m in logs)
        assert mats["cleaned_chunks"].metadata["decisions"].value == {
            "kept": 4, "exact_duplicate": 2, "near_duplicate": 0, "filtered": 0}

        mats, steps, _ = _materialize(instance)  # nothing new: a cache hit, and no unit step at all
        assert mats["cleaned_chunks"].metadata["cache_hit"].value is True
        assert not any("_unit[" in s for s in steps)


def units_job():
    """The two stages as a job on the multiprocess executor (module level: reconstructable)."""
    job = dg.define_asset_job("units_job", selection=["raw_docs"],
                              executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}))
    return dg.Definitions(assets=[raw_docs, cleaned_chunks], jobs=[job], resources=RESOURCES).resolve_job_def(
        "units_job")


@pytest.mark.slow
def test_unit_steps_run_in_their_own_processes_with_the_multiprocess_executor(home):
    write_lines(home / "landing" / "a.jsonl", [doc_line(0, PROSE)])
    write_lines(home / "landing" / "b.jsonl", [doc_line(1, OTHER_PROSE)])
    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(units_job), instance=instance)
        assert result.success
        pids = {e.step_key: e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
        units = [k for k in pids if "_unit[" in k]
        assert sorted(units) == ["raw_docs.raw_docs_unit[u00000]", "raw_docs.raw_docs_unit[u00001]"]
        assert len({pids[k] for k in pids}) == len(pids) == 4  # a process per step: the steps can use every core
        (mat,) = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
        assert mat.metadata["kept"].value == 2
