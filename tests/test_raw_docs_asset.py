import json
import subprocess
import sys

import dagster as dg
import pytest

from assets import raw_docs
from definitions import defs
from ml.catalog import Catalog
from ml.sample_corpus import write_sample_corpus
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from tests.conftest import REPO, subprocess_env, write_lines

BAD = ['{"title": "x", "content": "", "url": "u"}', "{not json", '{"title": "x", "content": "y"}']


def _resources():
    return {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}


def _mat(instance):
    result = dg.materialize([raw_docs], instance=instance, resources=_resources())
    assert result.success
    (mat,) = result.asset_materializations_for_node("raw_docs")
    return mat


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {"ingest_job", "full_pipeline"} <= {j.name for j in repo.get_all_jobs()}
    assert defs.resolve_assets_def("raw_docs").code_versions_by_key[dg.AssetKey("raw_docs")]


def test_materialize_twice_is_a_cache_hit_and_a_change_is_a_new_version(home):
    write_sample_corpus(home / "landing", limit=120)
    write_lines(home / "landing" / "bad.jsonl", BAD)
    with dg.instance_for_test() as instance:
        first = _mat(instance)
        md = first.metadata
        assert md["lines_read"].value == 123 and md["kept"].value + md["quarantined"].value == 123
        assert md["quarantine_reasons"].value == {"empty_content": 1, "invalid_json": 1, "missing_field": 1}
        assert md["cache_hit"].value is False
        version = first.tags["dagster/data_version"]

        second = _mat(instance)
        assert second.tags["dagster/data_version"] == version
        assert second.metadata["cache_hit"].value is True

        write_lines(home / "landing" / "more.jsonl", ['{"title": "n", "content": "A new document.", "url": "https://n"}'])
        third = _mat(instance)
        assert third.tags["dagster/data_version"] != version
        assert third.metadata["cache_hit"].value is False

    cat = Catalog(home)
    av = cat.query("SELECT data_version, cache_hit FROM asset_versions ORDER BY created_at").rows()
    assert av == [(version, False), (version, True), (third.tags["dagster/data_version"], False)]
    # quarantine rows are written once per version, not once per materialization
    assert cat.query("SELECT count(*) FROM quarantine WHERE data_version = ?", [version]).item() == 3
    edges = cat.query("SELECT DISTINCT upstream_asset FROM lineage_edges WHERE data_version = ?", [version])
    assert sorted(edges["upstream_asset"]) == ["landing:bad.jsonl", "landing:sample/pydoc_topics.jsonl",
                                               "landing:sample/stdlib_docstrings.jsonl"]
    stats = dict(cat.query("SELECT stat, value FROM dataset_stats WHERE data_version = ?", [version]).rows())
    assert stats["lines_read"] == 123 and stats["kept"] == 120


def test_empty_landing_zone_fails_with_a_clear_message(home):
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_docs], instance=instance, resources=_resources(), raise_on_error=False)
    assert not result.success
    assert "lineage sample-corpus" in str(result.get_step_failure_events()[0].event_specific_data.error.message)


@pytest.mark.slow
def test_dagster_job_execute_then_lineage_stats_and_trace(home):
    write_sample_corpus(home / "landing", limit=60)
    env = subprocess_env(home)
    # in-process execution: the default executor starts a process per step, and curation has a step
    # per landing file (test_curation_units_asset covers that); here the job and the catalog matter
    in_process = home / "in_process.yaml"
    in_process.write_text("execution: {config: {in_process: {}}}\n")
    run = subprocess.run([sys.executable, "-m", "dagster", "job", "execute", "-f", "definitions.py", "-j", "ingest_job",
                          "-c", str(in_process)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "RUN_SUCCESS" in run.stdout + run.stderr
    lineage = [sys.executable, "-m", "ml.cli"]
    stats = subprocess.run(lineage + ["stats", "select asset, rows, cache_hit from asset_versions", "--format", "json"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert stats.returncode == 0, stats.stderr
    rows = [json.loads(x) for x in stats.stdout.splitlines()]
    assert {r["asset"] for r in rows} == {  # groups data, corpus and datasets
        "raw_docs", "cleaned_chunks", "relation_triples", "tokenizer", "tokenized_corpus",
        "embedding_dataset", "relation_dataset", "sft_dataset", "preference_dataset", "gnn_dataset", "ner_dataset"}
    assert {"asset": "raw_docs", "rows": 60, "cache_hit": False} in rows
    trace = subprocess.run(lineage + ["trace", "raw_docs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert trace.returncode == 0 and "landing:sample/pydoc_topics.jsonl@" in trace.stdout
    # the views file for outside tools was created
    assert (home / "catalog" / "catalog.duckdb").exists()
