"""Incremental curation gives a cold rebuild's answer: land A, then B, then C and compare every
raw_docs row and every cleaned_chunks decision with one cold run over A+B+C in a fresh store;
remove a landing file, insert one that sorts first, and compare again. The corpus has near copies
on both sides of the threshold across files, exact copies (case and whitespace), and a document
landed twice (raw_docs' duplicate_doc across files)."""

import json
import random
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

import ml.curation_units as cu
from ml.cleaned_chunks.pipeline import CurationConfig, read_chunks, read_clean_docs, read_decisions
from ml.raw_docs import IngestConfig, read_docs, read_quarantine, scan_landing, slice_files
from ml.store import ArtifactStore, BuildResult, CorruptVersionError
from tests.helpers.near_dedup import NO_RULES, edited, jaccard, noisy_join, vocabulary

CFG = CurationConfig(filters=NO_RULES, batch_docs=40)  # several batches per unit


def make_files(seed: int = 5) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    vocab = vocabulary(rng, 20_000)
    files: dict[str, list[dict]] = {"a.jsonl": [], "b.jsonl": [], "c.jsonl": [], "0first.jsonl": []}
    originals: list[list[str]] = []
    n = 0
    for name in files:
        for _ in range(60):
            n += 1
            r = rng.random()
            if originals and r < 0.25:  # a near copy of an earlier document, around the threshold
                base = rng.choice(originals)
                words = edited(rng, base, vocab, rng.uniform(0.72, 0.9))
            elif originals and r < 0.35:  # an exact copy (case / whitespace only)
                words = rng.choice(originals)
            else:
                words = rng.sample(vocab, 100)
                originals.append(words)
            files[name].append({"title": f"t{n}", "content": noisy_join(rng, words), "url": f"https://e/{n}"})
    files["c.jsonl"].append(dict(files["a.jsonl"][3]))  # the same document landed twice: duplicate_doc
    return files


def land(landing: Path, name: str, rows: list[dict]) -> None:
    landing.mkdir(parents=True, exist_ok=True)
    (landing / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def run(home: Path, landing: Path, ingest: IngestConfig = IngestConfig()) -> tuple[dict, dict]:
    """raw_docs then cleaned_chunks through the stored units; returns (frames, cleaned_chunks stats)."""
    store = ArtifactStore(home)
    files = slice_files(scan_landing(landing), ingest.slice_bytes)
    units = [cu.ingest_unit(store, f, ingest).data_version for f in files]
    raw = store.put("raw_docs", lambda out: BuildResult(stats=cu.assemble_raw(store, files, units, out).stats()),
                    fingerprint="0" * 16, code_version="t", config={}, upstream={})
    raw = store.open("raw_docs", raw.data_version)
    cunits = [cu.curate_unit(store, raw, u, CFG).data_version for u in cu.plan_units(raw)]
    report = {}

    def build(out: Path) -> BuildResult:
        report["r"] = cu.merge_and_assemble(store, cunits, CFG, out)
        return BuildResult(stats=report["r"].stats())

    clean = store.put("cleaned_chunks", build, fingerprint="1" * 16, code_version="t", config={}, upstream={})
    frames = {"docs": read_docs(raw.path).collect(), "quarantine": read_quarantine(raw.path).collect(),
              "decisions": read_decisions(clean.path).collect(), "clean": read_clean_docs(clean.path).collect(),
              "chunks": read_chunks(clean.path).collect()}
    return frames, report["r"]


def assert_same(a: dict, b: dict) -> None:
    for key in a:
        assert a[key].equals(b[key]), key


@pytest.fixture(scope="module")
def corpus():
    return make_files()


def test_landing_one_file_at_a_time_decides_as_a_cold_run(corpus, tmp_path):
    landing, home = tmp_path / "landing", tmp_path / "home"
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        land(landing, name, corpus[name])
        inc, report = run(home, landing)
        assert report.lsh["units_merged"] == 1  # only the new file is merged
    cold_landing = tmp_path / "cold_landing"
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        land(cold_landing, name, corpus[name])
    cold, cold_report = run(tmp_path / "cold_home", cold_landing)
    assert cold_report.lsh["units_merged"] == 3
    assert_same(inc, cold)
    dec = cold["decisions"]
    counts = dict(dec.group_by("decision").len().rows())
    assert counts["near_duplicate"] >= 10 and counts["exact_duplicate"] >= 10 and counts["kept"] >= 100
    # near copies across files are found, and every near decision is at the threshold or above it
    near = dec.filter(pl.col("decision") == "near_duplicate")
    assert near["similarity"].min() >= CFG.jaccard_threshold
    text = dict(zip(cold["docs"]["doc_id"].to_list(), cold["docs"]["content"].to_list()))
    for d, of, s in near.select("doc_id", "duplicate_of", "similarity").rows():
        assert jaccard(text[d], text[of]) == pytest.approx(s, abs=1e-12)
    assert cold["quarantine"]["reason"].to_list() == ["duplicate_doc"]  # c.jsonl's copy of a.jsonl's line 4
    assert "(a.jsonl:4)" in cold["quarantine"]["detail"][0]
    # a run with nothing new reuses everything
    again, report = run(home, landing)
    assert report.lsh["units_merged"] == 0
    assert_same(again, cold)


def test_removing_or_inserting_a_file_decides_as_a_cold_run(corpus, tmp_path):
    landing, home = tmp_path / "landing", tmp_path / "home"
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        land(landing, name, corpus[name])
        run(home, landing)
    (landing / "b.jsonl").unlink()
    inc, report = run(home, landing)
    assert report.lsh["units_merged"] == 1  # c.jsonl, against the index stored after a.jsonl
    cold_landing = tmp_path / "cold"
    for name in ("a.jsonl", "c.jsonl"):
        land(cold_landing, name, corpus[name])
    cold, _ = run(tmp_path / "cold_home", cold_landing)
    assert_same(inc, cold)
    # a file that sorts first changes the order: every unit after it is merged again
    land(landing, "0first.jsonl", corpus["0first.jsonl"])
    land(cold_landing, "0first.jsonl", corpus["0first.jsonl"])
    inc, report = run(home, landing)
    assert report.lsh["units_merged"] == 3
    cold, _ = run(tmp_path / "cold_home2", cold_landing)
    assert_same(inc, cold)
    # decisions moved with the order: some document of a.jsonl is now a duplicate of one in 0first.jsonl
    first_ids = set(cold["docs"].filter(pl.col("source") == "0first.jsonl")["doc_id"].to_list())
    assert cold["decisions"].filter(pl.col("duplicate_of").is_in(list(first_ids))).height > 0


def test_a_changed_config_is_not_served_from_another_configs_index(corpus, tmp_path):
    landing, home = tmp_path / "landing", tmp_path / "home"
    land(landing, "a.jsonl", corpus["a.jsonl"])
    run(home, landing)
    land(landing, "b.jsonl", corpus["b.jsonl"])
    other = replace(CFG, jaccard_threshold=0.75)
    assert cu.chain(["x"], other) != cu.chain(["x"], CFG)
    assert cu.chain(["x"], replace(CFG, threads=1, batch_docs=7)) == cu.chain(["x"], CFG)


def test_a_corrupt_stored_unit_fails_the_merge_that_reads_it(corpus, tmp_path):
    landing, home = tmp_path / "landing", tmp_path / "home"
    land(landing, "a.jsonl", corpus["a.jsonl"])
    run(home, landing)
    store = ArtifactStore(home)
    (unit,) = store.versions(cu.CURATION_UNIT)
    survivors = sorted((unit.path / "survivors").glob("*.parquet"))[0]
    survivors.chmod(0o644)
    survivors.write_bytes(survivors.read_bytes()[:-1] + b"\0")  # same size, other bytes
    land(landing, "b.jsonl", corpus["b.jsonl"])  # near copies of a.jsonl's documents: the merge reads a's text
    with pytest.raises(CorruptVersionError, match="survivors/part-00000.parquet"):
        run(home, landing)


def test_slices_of_a_large_file_decide_as_the_whole_file(corpus, tmp_path):
    """A file above slice_bytes is several units (cut after newlines); every raw row (line numbers
    included), quarantine row and decision equals the unsliced run's. The big file repeats a line
    in another slice (duplicate_doc across slices), holds a bad line, and ends without a newline."""
    landing = tmp_path / "landing"
    land(landing, "a.jsonl", corpus["a.jsonl"])
    big = corpus["b.jsonl"] + corpus["c.jsonl"][:40]
    lines = [json.dumps(r) for r in big]
    lines.insert(30, "{not json")
    lines.insert(90, lines[5])  # the same document again, slices later
    (landing / "big.jsonl").write_text("\n".join(lines))  # no final newline
    size = (landing / "big.jsonl").stat().st_size
    sliced_cfg = IngestConfig(slice_bytes=size // 7)
    slices = slice_files(scan_landing(landing), sliced_cfg.slice_bytes)
    big_slices = [f for f in slices if f.relpath == "big.jsonl"]
    assert len(big_slices) >= 6 and sum(f.size for f in big_slices) == size
    assert [f.offset for f in big_slices][1:] == [f.offset + f.size for f in big_slices][:-1]
    # with a cache of the cuts, the same file is sliced the same way without being read again
    cache = tmp_path / "cuts.json"
    assert slice_files(scan_landing(landing), sliced_cfg.slice_bytes, cache) == slices
    files = scan_landing(landing)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ml.raw_docs._slice_cuts", lambda *a: pytest.fail("an unchanged file was read for its cuts"))
        assert slice_files(files, sliced_cfg.slice_bytes, cache) == slices
    whole, whole_report = run(tmp_path / "whole", landing, IngestConfig(slice_bytes=0))
    sliced, sliced_report = run(tmp_path / "sliced", landing, sliced_cfg)
    assert sliced_report.lsh["units_merged"] == len(slices) > len(big_slices)  # a.jsonl is sliced too
    assert whole_report.lsh["units_merged"] == 2
    assert_same(sliced, whole)
    q = whole["quarantine"]
    assert sorted(q["reason"].to_list()) == ["duplicate_doc", "invalid_json"]
    assert "(big.jsonl:6)" in q.filter(pl.col("reason") == "duplicate_doc")["detail"][0]
    assert whole["docs"]["line"].max() == len(lines)


def test_a_unit_step_verifies_the_raw_parts_it_reads(corpus, tmp_path):
    landing, home = tmp_path / "landing", tmp_path / "home"
    land(landing, "a.jsonl", corpus["a.jsonl"])
    land(landing, "b.jsonl", corpus["b.jsonl"])
    store = ArtifactStore(home)
    files = scan_landing(landing)
    units = [cu.ingest_unit(store, f, IngestConfig()).data_version for f in files]
    raw = store.put("raw_docs", lambda out: BuildResult(stats=cu.assemble_raw(store, files, units, out).stats()),
                    fingerprint="0" * 16, code_version="t", config={}, upstream={})
    a, b = cu.plan_units(raw)
    part = raw.file(b.parts[0])
    part.chmod(0o644)
    part.write_bytes(part.read_bytes()[:-1] + b"\0")  # same size, other bytes
    fresh = ArtifactStore(home)
    assert cu.curate_unit(fresh, lambda: fresh.get("raw_docs", raw.data_version), a, CFG).data_version  # a's parts are fine
    with pytest.raises(CorruptVersionError, match=b.parts[0]):
        cu.curate_unit(fresh, lambda: fresh.get("raw_docs", raw.data_version), b, CFG)
