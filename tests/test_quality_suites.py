"""Quality suites (ml/quality/) on versions built in a temporary store: a clean version of every
asset passes every check; a version built to violate one expectation fails that check, and only
that one; results land in check_results and the gate reads back the failed blocking ones.

The versions come from tests/helpers/quality_versions.py.
"""

from __future__ import annotations

import json
from typing import Callable

import polars as pl
import pytest

from ml.catalog import Catalog
from ml.quality.gate import failed_blocking_checks
from ml.quality.suite import Thresholds
from ml.quality.suites import SUITES
from ml.quality.validate import record_results, validate_version
from ml.store import ArtifactStore, StoredVersion
from tests.helpers.quality_versions import (
    DOCS, Files, MUTATIONS, QUARANTINE_EMPTY, Versions, WARNINGS, cleaned_chunks_files, put_version,
    raw_docs_files, set_cell, shard_counts, tokenized_corpus_files,
)


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> Versions:
    return Versions(ArtifactStore(tmp_path_factory.mktemp("quality_home")))


def _results(store: ArtifactStore, v: StoredVersion, thresholds: Thresholds = Thresholds()) -> dict[str, dict]:
    return {r["check_name"]: r for r in validate_version(store, v.asset, v.data_version, thresholds)}


def test_every_blocking_check_has_a_violation():
    blocking = {(a, c.name) for a, s in SUITES.items() for c in s.checks if c.blocking}
    warnings = {(a, c.name) for a, s in SUITES.items() for c in s.checks if not c.blocking}
    assert set(MUTATIONS) == blocking
    assert set(WARNINGS) == warnings


@pytest.mark.parametrize("asset", sorted(SUITES))
def test_clean_version_passes_every_check(versions, asset):
    v = versions.build(asset)
    results = _results(versions.store, v)
    assert set(results) == {c.name for c in SUITES[asset].checks}
    bad = {n: (r["error"], r["sample"]) for n, r in results.items() if not r["passed"]}
    assert not bad
    assert all(r["unexpected_count"] == 0 for r in results.values())


@pytest.mark.parametrize("asset,check", sorted(MUTATIONS))
def test_violation_fails_exactly_its_check(versions, asset, check):
    v = versions.build(asset, MUTATIONS[(asset, check)])
    results = _results(versions.store, v)
    r = results[check]
    assert not r["passed"] and r["severity"] == "ERROR"
    assert r["error"] is None, r["error"]  # a real expectation failure, not a crash
    assert r["unexpected_count"] >= 1 and r["sample"], r
    assert r["expectation"]["type"].startswith("expect_")
    others = {n: x["error"] or x["sample"] for n, x in results.items()
              if n != check and not x["passed"] and x["severity"] == "ERROR"}
    if check != "columns_and_types":  # a wrong schema may legitimately break more than one check
        assert not others


@pytest.mark.parametrize("asset,check", sorted(WARNINGS))
def test_warning_ceiling_is_a_warning(versions, asset, check):
    v = versions.build(asset, WARNINGS[(asset, check)])
    r = _results(versions.store, v)[check]
    assert not r["passed"] and r["severity"] == "WARN" and r["sample"]
    loose = Thresholds(quarantine_rate_max=1.0, duplicate_rate_max=1.0, max_label_share=1.0)
    assert _results(versions.store, v, loose)[check]["passed"]  # the ceiling is what decides


def test_failing_rows_point_at_the_culprits(versions):
    v = versions.build("relation_triples", MUTATIONS[("relation_triples", "confidence_in_range")])
    r = _results(versions.store, v)["confidence_in_range"]
    assert r["unexpected_count"] == 3
    assert sorted(map(str, (s["confidence"] for s in r["sample"]))) == ["0.1", "1.5", "None"]
    assert r["expectation"]["kwargs"]["min_value"] == 0.3  # from the version's own config

    v = versions.build("cleaned_chunks", MUTATIONS[("cleaned_chunks", "doc_id_in_raw_docs")])
    r = _results(versions.store, v)["doc_id_in_raw_docs"]
    assert [s["doc_id"] for s in r["sample"]] == ["not-a-raw-doc"]
    assert r["inputs"] == {"raw_docs": versions.raw.data_version}


def test_cross_asset_reads_the_recorded_upstream_not_the_newest(versions):
    # a newer raw_docs version without d1: chunks built from the older one still pass
    newer = raw_docs_files()
    newer[DOCS] = newer[DOCS].filter(pl.col("doc_id") != "d1")
    put_version(versions.store, "raw_docs", newer)
    v = versions.build("cleaned_chunks")
    assert _results(versions.store, v)["doc_id_in_raw_docs"]["passed"]
    # the recorded upstream is gone from the store: a clear error, not a pass
    gone = put_version(versions.store, "cleaned_chunks", cleaned_chunks_files(versions.raw),
                       config={"chunk_size": 64}, upstream={"raw_docs": "0123456789abcdef"})
    r = _results(versions.store, gone)["doc_id_in_raw_docs"]
    assert not r["passed"] and "raw_docs@0123456789abcdef" in r["error"] and "not in the store" in r["error"]


def test_missing_config_and_files_are_errors_not_passes(versions):
    v = put_version(versions.store, "cleaned_chunks", cleaned_chunks_files(versions.raw),
                    upstream={"raw_docs": versions.raw.data_version})  # no chunk_size in config
    r = _results(versions.store, v)["chunk_length_in_bounds"]
    assert not r["passed"] and "chunk_size" in r["error"]
    v = put_version(versions.store, "tokenized_corpus", {"train/shard-00000.bin": b"\x01\x00"},
                    config={"val_ratio": 0.05})
    results = _results(versions.store, v)
    assert all(not r["passed"] and "index.json" in r["error"] for r in results.values())


def test_tokenizer_vocab_bounds_the_ids(versions):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    tok_dir = versions.store.home / "tok"
    tok_dir.mkdir(exist_ok=True)
    Tokenizer(WordLevel({f"w{i}": i for i in range(100)}, unk_token="w0")).save(str(tok_dir / "tokenizer.json"))
    tok = put_version(versions.store, "tokenizer", {"tokenizer.json": (tok_dir / "tokenizer.json").read_bytes()})
    v = put_version(versions.store, "tokenized_corpus", tokenized_corpus_files(), config={"val_ratio": 0.05},
                    upstream={"tokenizer": tok.data_version})  # ids up to 299 > 100-token vocabulary
    r = _results(versions.store, v)["token_ids_below_vocab"]
    assert not r["passed"] and r["expectation"]["kwargs"]["max_value"] == 99
    assert r["notes"]["vocab_from"] == f"tokenizer@{tok.data_version}"


def test_val_share_tolerance_scales_with_corpus_size(versions):
    small = versions.build("tokenized_corpus", shard_counts(9, 1))  # 10% val of 10 docs for 5%: noise
    assert _results(versions.store, small)["val_share_within_tolerance"]["passed"]
    large = versions.build("tokenized_corpus", shard_counts(9000, 1000))  # 10% of 10,000 docs: a real miss
    assert not _results(versions.store, large)["val_share_within_tolerance"]["passed"]


def test_results_recorded_and_gate_reads_latest(versions):
    catalog = Catalog(versions.store.home)
    bad = versions.build("raw_docs", MUTATIONS[("raw_docs", "doc_id_unique")])
    record_results(catalog, "raw_docs", bad.data_version, validate_version(versions.store, "raw_docs", bad.data_version),
                   "run-1")
    rows = catalog.query("SELECT check_name, passed, severity, details, run_id FROM check_results "
                         "WHERE data_version = ? ORDER BY check_name", [bad.data_version])
    assert rows["check_name"].to_list() == sorted(c.name for c in SUITES["raw_docs"].checks)
    assert rows.filter(pl.col("check_name") == "quarantine_rate")["severity"].item() == "WARN"
    details = json.loads(rows.filter(pl.col("check_name") == "doc_id_unique")["details"].item())
    assert details["unexpected_count"] == 2 and {s["doc_id"] for s in details["sample"]} == {"d0"}
    gate = failed_blocking_checks(catalog, "raw_docs", bad.data_version)
    assert [g["check_name"] for g in gate] == ["doc_id_unique"] and gate[0]["run_id"] == "run-1"

    good = versions.build("raw_docs", WARNINGS[("raw_docs", "quarantine_rate")])  # a failed warning only
    record_results(catalog, "raw_docs", good.data_version,
                   validate_version(versions.store, "raw_docs", good.data_version), "run-2")
    assert failed_blocking_checks(catalog, "raw_docs", good.data_version) == []


def test_unreadable_version_fails_every_check_with_the_reason(versions):
    v = put_version(versions.store, "raw_docs", {DOCS: b"not parquet at all",
                                                 "quarantine/part-00000.parquet": QUARANTINE_EMPTY})
    results = _results(versions.store, v)
    assert set(results) == {c.name for c in SUITES["raw_docs"].checks}
    assert all(not r["passed"] and "could not read raw_docs@" in r["error"] for r in results.values())


def test_unchecked_versions_are_visible_to_the_gate(versions):
    from ml.quality.gate import unchecked_blocking_checks

    catalog = Catalog(versions.store.home)
    v = versions.build("sft_dataset")
    assert unchecked_blocking_checks(catalog, "sft_dataset", v.data_version) == [
        "no_doc_in_both_splits", "no_item_in_both_splits", "train_split_non_empty"]
    record_results(catalog, "sft_dataset", v.data_version, validate_version(versions.store, "sft_dataset", v.data_version),
                   "run-3")
    assert unchecked_blocking_checks(catalog, "sft_dataset", v.data_version) == []
    assert unchecked_blocking_checks(catalog, "lm_checkpoint", "0123456789abcdef") == []


@pytest.mark.parametrize("check", ["no_doc_in_both_splits", "no_item_in_both_splits"])
def test_leak_into_the_test_split_fails_the_leakage_checks(versions, check):
    """test.parquet counts as a third split: a train document or item text in it is a leak."""
    def with_test(leak: bool) -> Callable[[Files], None]:
        def mutate(files: Files) -> None:
            test = files["val.parquet"].with_columns(doc_id=pl.lit("test9"), prompt=pl.concat_str(
                pl.lit("held out: "), pl.col("prompt")))
            if leak and check == "no_doc_in_both_splits":
                test = set_cell("doc_id", 0, "train3")(test)
            elif leak:
                test = set_cell("prompt", 0, files["train.parquet"]["prompt"][5])(test)
            files["test.parquet"] = test
        return mutate

    assert _results(versions.store, versions.build("sft_dataset", with_test(False)))[check]["passed"]
    r = _results(versions.store, versions.build("sft_dataset", with_test(True)))[check]
    assert not r["passed"] and r["unexpected_count"] >= 1
