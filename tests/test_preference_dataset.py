"""preference_dataset (ml/datasets/preference.py): landing pairs validated line by line with raw_docs'
quarantine, pairs derived from SFT rows, mixing, document-level split without leakage, and raw_docs /
the landing sensor leaving landing/preferences/ alone."""

import gzip
import json

import polars as pl
import pytest

from ml import raw_docs
from ml.datasets import preference
from ml.datasets.sft import SftConfig, build_sft
from ml.datasets.splits import doc_split
from ml.tokenizer import ASSISTANT, END, USER
from tests.conftest import write_lines
from tests.helpers.corpus import small_corpus


def pair(prompt="What does f return?", chosen="an int", rejected="a str", **extra) -> str:
    return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra})


def _landing(tmp_path):
    landing = tmp_path / "landing"
    write_lines(landing / "docs.jsonl", [json.dumps({"title": "t", "content": "c", "url": "u"})])
    write_lines(landing / "preferences" / "a.jsonl", [
        pair(source_note="kept as meta"),                                     # 1 kept
        "",                                                                   # 2 blank_line
        "{not json}",                                                         # 3 invalid_json
        json.dumps({"prompt": "p", "chosen": "c"}),                           # 4 missing_field
        json.dumps({"prompt": "p", "chosen": 3, "rejected": "r"}),            # 5 wrong_type
        pair(chosen="   "),                                                   # 6 empty_content
        pair(chosen="same  answer", rejected="same answer"),                  # 7 same_response
        pair(),                                                               # 8 duplicate_pair
        pair(prompt="What does g return?", chosen="a list", rejected="None"),  # 9 kept
    ])
    gz = landing / "preferences" / "b.jsonl.gz"
    data = gzip.compress("".join(pair(prompt=f"What does h{i} raise?", chosen="KeyError", rejected="nothing") + "\n"
                                 for i in range(3)).encode())
    gz.write_bytes(data[: len(data) - 6])  # cut off: the stream ends early
    write_lines(landing / "preferences" / ".c.jsonl.partial", [pair()])  # hidden: a writer in progress
    return landing


def test_landing_pairs_validated_with_raw_docs_quarantine_and_exact_accounting(tmp_path):
    landing = _landing(tmp_path)
    files = preference.scan_preferences(landing)
    assert [f.relpath for f in files] == ["preferences/a.jsonl", "preferences/b.jsonl.gz"]
    kept, report = preference.read_pairs(files, tmp_path / "q")
    q = pl.read_parquet(tmp_path / "q" / "*.parquet")
    assert report.lines_read == report.kept + report.quarantined == kept.height + q.height
    reasons = dict(zip(*q.group_by("reason").len().sort("reason").to_dict(as_series=False).values()))
    assert reasons == {"blank_line": 1, "invalid_json": 1, "missing_field": 1, "wrong_type": 1, "empty_content": 1,
                       "same_response": 1, "duplicate_pair": 1, "truncated_file": 1}
    assert q.filter(pl.col("reason") == "empty_content")["detail"].to_list() == ["chosen empty"]
    assert q.filter(pl.col("reason") == "duplicate_pair")["detail"].to_list() == ["same pair as preferences/a.jsonl:1"]
    assert q.filter(pl.col("reason") == "wrong_type")[["source", "line"]].row(0) == ("preferences/a.jsonl", 5)
    assert kept["line"].to_list()[:2] == [1, 9] and kept.filter(pl.col("source") == "preferences/b.jsonl.gz").height >= 1
    first = kept.row(0, named=True)
    # a plain prompt becomes a user turn of the SFT chat template; responses end the turn
    assert first["prompt"].startswith(("<|system|>", USER)) and first["prompt"].endswith(ASSISTANT)
    assert first["chosen"] == "an int" + END and first["rejected"] == "a str" + END
    assert json.loads(first["meta"]) == {"source_note": "kept as meta"}
    assert report.stats()["landing.quarantine.same_response"] == 1


def test_raw_docs_leaves_preferences_alone_and_the_landing_sensor_watches_both(tmp_path):
    from sensors.landing import list_landing

    landing = _landing(tmp_path)
    assert [f.relpath for f in raw_docs.scan_landing(landing)] == ["docs.jsonl"]
    files, partial = list_landing(landing)  # a new preference file requests an ingest run too
    assert set(files) == {"docs.jsonl", "preferences/a.jsonl", "preferences/b.jsonl.gz"} and partial == []
    # a file *named* preferences.jsonl at the top, or a preferences/ directory deeper down, is a document file
    assert raw_docs.is_landing_file("preferences.jsonl") and raw_docs.is_landing_file("a/preferences/x.jsonl")
    assert not raw_docs.is_landing_file("preferences/x.jsonl") and preference.is_preference_file("preferences/x.jsonl.gz")


@pytest.fixture(scope="module")
def sft_rows():
    docs, chunks, triples = small_corpus()
    parts, _ = build_sft(triples, chunks.select("chunk_id", "doc_id"), docs.select("doc_id", "source"),
                         SftConfig(val_ratio=0.2))
    return docs.select("doc_id", "source"), pl.concat([parts["train"], parts["val"]])


def test_derived_pairs_negatives_from_the_same_split_no_leakage_and_accounting(sft_rows):
    docs, sft = sft_rows
    cfg = preference.PreferenceConfig(val_ratio=0.2)
    out, s = preference.build_preference(pl.DataFrame(schema=preference.PAIR_SCHEMA), sft, docs, cfg)
    train, val = out["train"], out["val"]
    assert train.height > 50 and val.height > 5 and s["derived.used"] == 1
    assert s["examples_in"] == s["derived.made"] == train.height + val.height + s["skipped.mixed_out"] + \
        s["skipped.prompt_in_train"]
    assert s["derived.sft_rows"] == s["derived.made"] + s["skipped.no_negative"] == sft.height
    for name, frame in (("train", train), ("val", val)):
        assert set(frame["origin"]) == {"derived"}
        assert (frame["chosen"] != frame["rejected"]).all()
        # the pair's own document and the one the negative comes from are both in this split
        assert set(doc_split(frame["doc_id"].to_list(), cfg.seed, cfg.val_ratio)) == {name}
        assert set(doc_split(frame["rejected_doc_id"].to_list(), cfg.seed, cfg.val_ratio)) == {name}
    assert not set(train["doc_id"]) & set(val["doc_id"]) and not set(train["prompt"]) & set(val["prompt"])
    # rejected = the answer to another question of the same relation whose object differs (when one exists)
    by_prompt = {r["prompt"]: r for r in sft.iter_rows(named=True)}
    by_response = {r["response"]: r for r in sft.iter_rows(named=True)}
    same_rel = [by_response[r]["relation"] == by_prompt[p]["relation"] for p, r in zip(train["prompt"], train["rejected"])]
    assert sum(same_rel) / len(same_rel) > 0.9
    assert all(by_response[r]["object"] != by_prompt[p]["object"] for p, r in zip(train["prompt"], train["rejected"]))
    # deterministic
    again, _ = preference.build_preference(pl.DataFrame(schema=preference.PAIR_SCHEMA), sft, docs, cfg)
    assert again["train"].equals(train)


def _supplied(n: int, source: str) -> pl.DataFrame:
    rows = [{"prompt": f"{USER}q{i % (n // 2)}{END}{ASSISTANT}", "chosen": f"good {i}{END}", "rejected": f"bad {i}{END}",
             "origin": "landing", "doc_id": preference.pair_doc_id(f"{USER}q{i % (n // 2)}{END}{ASSISTANT}"), "source": source,
             "rejected_doc_id": None, "line": i + 1, "meta": None} for i in range(n)]
    return pl.DataFrame(rows, schema=preference.PAIR_SCHEMA).with_columns(rejected_doc_id=pl.col("doc_id"))


def test_supplied_pairs_split_by_prompt_and_mixed_by_the_same_rules(sft_rows):
    docs, sft = sft_rows
    supplied = _supplied(400, "preferences/mine.jsonl")
    out, s = preference.build_preference(supplied, sft, docs, preference.PreferenceConfig(val_ratio=0.2))  # derive: auto
    assert s["derived.used"] == 0 and set(out["train"]["origin"]) == {"landing"}
    # every pair of one prompt is in one split
    assert not set(out["train"]["prompt"]) & set(out["val"]["prompt"])
    assert s["examples_in"] == 400 == out["train"].height + out["val"].height + s["skipped.mixed_out"] + \
        s["skipped.prompt_in_train"]

    both, s2 = preference.build_preference(supplied, sft, docs, preference.PreferenceConfig(
        val_ratio=0.2, derive="always",
        mix_weights=(("alpha", 0.25), ("beta", 0.25), ("gamma", 0.25), ("mine", 0.25))))
    shares = {k.rsplit(".", 1)[-1]: v for k, v in s2.items() if k.startswith("mix.share.")}
    assert set(both["train"]["origin"]) == {"landing", "derived"}
    assert s2["mix.docs_kept"] > 0 and all(abs(shares[k] - 0.25) <= 0.5 / s2["mix.docs_kept"] + 1e-9 for k in shares)
    assert s2["examples_in"] == both["train"].height + both["val"].height + s2["skipped.mixed_out"] + \
        s2["skipped.prompt_in_train"]
    with pytest.raises(ValueError, match="preferences/mine.jsonl"):  # a source without a weight is named
        preference.build_preference(supplied, sft, docs, preference.PreferenceConfig(
            derive="always", mix_weights=(("alpha", 1.0), ("beta", 1.0), ("gamma", 1.0))))
    with pytest.raises(ValueError, match="derive"):
        preference.PreferenceConfig(derive="sometimes")
