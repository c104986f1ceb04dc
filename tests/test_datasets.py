"""Splits, mixing and the three datasets (ml/datasets), on a small synthetic corpus with real triples."""

import json

import polars as pl
import pytest

from ml.datasets import mixing, write_splits
from ml.datasets.embedding import EmbeddingConfig, build_embedding
from ml.datasets.relation import LABELS, NO_RELATION, RelationConfig, build_relation, find_entities, mark, write_labels
from ml.datasets.sft import IGNORE_INDEX, SftConfig, build_sft, chat_prompt, chat_response, encode_sft
from ml.datasets.splits import doc_split
from ml.relation_triples import RELATIONS
from tests.helpers.corpus import small_corpus, trained_tokenizer  # noqa: F401  (fixture)


class _Tok:
    """A deterministic word-level stand-in tokenizer for tests that need no trained BPE."""

    def __call__(self, text, add_special_tokens=False):
        if isinstance(text, list):
            return {"input_ids": [self(t)["input_ids"] for t in text]}
        return {"input_ids": [hash(w) % 1000 for w in text.split()]}


# ---- splits --------------------------------------------------------------------------------------

def test_doc_split_is_a_pure_function_of_seed_and_doc_id():
    ids = [f"doc-{i}" for i in range(4000)]
    a = doc_split(ids, seed=3, val_ratio=0.1)
    assert a == doc_split(list(reversed(ids)), seed=3, val_ratio=0.1)[::-1]  # order does not matter
    assert doc_split(ids[:10], 3, 0.1) == a[:10]  # nor the other documents
    assert 0.08 < a.count("val") / len(ids) < 0.12
    assert a != doc_split(ids, seed=4, val_ratio=0.1)
    assert set(doc_split(ids, 3, 0.0)) == {"train"}
    with pytest.raises(ValueError, match="val_ratio"):
        doc_split(ids, 3, 1.0)


# ---- mixing --------------------------------------------------------------------------------------

def _mix_docs(sizes: dict[str, int]) -> pl.DataFrame:
    return pl.DataFrame([{"doc_id": f"{s}-{i}", "source": s} for s, n in sizes.items() for i in range(n)])


@pytest.mark.parametrize("weights", [
    {"a": 0.2, "b": 0.3, "c": 0.5}, {"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 1, "b": 1, "c": 1},
])
def test_mix_weights_give_requested_shares_and_keep_the_scarcest_source_whole(weights):
    sizes = {"sub/a.jsonl": 500, "sub/b.jsonl": 300, "c.jsonl.gz": 200}
    kept, stats = mixing.apply_mix(_mix_docs(sizes), weights, seed=1)
    total = sum(weights.values())
    # tolerance: one document per source, relative to what is kept (rounding of round(T * w))
    tol = len(sizes) / kept.height
    full = {s: n for s, n in sizes.items()}
    limiting = min(full, key=lambda s: full[s] / weights[mixing.source_stem(s)])
    for s in sizes:
        w = weights[mixing.source_stem(s)] / total
        assert abs(stats[f"mix.share.{s}"] - w) <= tol, (s, stats[f"mix.share.{s}"], w)
        assert stats[f"mix.share.{s}"] == pytest.approx(kept.filter(pl.col("source") == s).height / kept.height)
    assert stats[f"mix.docs.{limiting}"] == full[limiting]  # as much data as the weights allow
    again, _ = mixing.apply_mix(_mix_docs(sizes).reverse(), weights, seed=1)
    assert set(again["doc_id"]) == set(kept["doc_id"])  # seeded, order-independent choice


def test_mix_keys_by_path_or_stem_and_clear_errors():
    docs = _mix_docs({"x/a.jsonl": 10, "y/b.jsonl": 10})
    kept, stats = mixing.apply_mix(docs, {"x/a.jsonl": 1, "b": 0}, seed=0)
    assert set(kept["source"]) == {"x/a.jsonl"} and stats["mix.dropped_docs.y/b.jsonl"] == 10
    _, natural = mixing.apply_mix(docs, {}, seed=0)
    assert natural["mix.share.x/a.jsonl"] == 0.5 and natural["mix.docs_dropped"] == 0
    with pytest.raises(ValueError, match="matches no source"):
        mixing.apply_mix(docs, {"a": 1, "b": 1, "typo": 1}, seed=0)
    with pytest.raises(ValueError, match="without a weight"):
        mixing.apply_mix(docs, {"a": 1}, seed=0)
    with pytest.raises(ValueError, match="ambiguous"):
        mixing.apply_mix(_mix_docs({"x/a.jsonl": 3, "y/a.jsonl": 3}), {"a": 1}, seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        mixing.apply_mix(docs, {"a": -1, "b": 1}, seed=0)


# ---- the three datasets ---------------------------------------------------------------------------

def _all(seed=5, val_ratio=0.2, mix=(), test_ratio=0.0):
    docs, chunks, triples = small_corpus()
    kw = dict(seed=seed, val_ratio=val_ratio, mix_weights=mix, test_ratio=test_ratio)
    emb = build_embedding(chunks, docs, EmbeddingConfig(**kw))
    rel = build_relation(triples, chunks, docs, RelationConfig(**kw))
    sft = build_sft(triples, chunks, docs, SftConfig(**kw), _Tok())
    return {"embedding": emb, "relation": rel, "sft": sft}


@pytest.mark.parametrize("test_ratio", [0.0, 0.2])
def test_no_document_in_both_splits_and_the_same_split_in_every_dataset(test_ratio):
    built = _all(test_ratio=test_ratio)
    docs = small_corpus()[0]
    expected = dict(zip(docs["doc_id"], doc_split(docs["doc_id"].to_list(), 5, 0.2, test_ratio)))
    for name, (parts, stats) in built.items():
        train, val, test = parts["train"], parts["val"], parts["test"]
        assert train.height > 20 and val.height > 3, name
        assert (test.height > 3) if test_ratio else test.height == 0, name
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            assert not set(parts[a]["doc_id"]) & set(parts[b]["doc_id"]), (name, a, b)
        for split, frame in parts.items():
            assert {expected[d] for d in frame["doc_id"]} <= {split}, name
        text_cols = {"embedding": ["anchor", "positive"], "relation": ["text"], "sft": ["prompt"]}[name]
        for col in text_cols:  # the same text never sits on two sides either
            for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                assert not set(parts[a][col]) & set(parts[b][col]), (name, col, a, b)


def test_test_split_takes_documents_from_train_only():
    """Adding a test split leaves every val document where it was; the test share is near test_ratio."""
    ids = [f"doc-{i}" for i in range(4000)]
    before, after = doc_split(ids, 3, 0.1), doc_split(ids, 3, 0.1, 0.15)
    assert [i for i, s in enumerate(before) if s == "val"] == [i for i, s in enumerate(after) if s == "val"]
    assert all(b == "train" for b, a in zip(before, after) if a == "test")
    assert abs(after.count("test") / len(ids) - 0.15) < 0.02
    with pytest.raises(ValueError, match="test_ratio"):
        doc_split(ids, 3, 0.5, 0.5)  # nothing left to train on


def test_embedding_pairs_stay_inside_one_document_and_share_no_text():
    (parts, stats) = _all()["embedding"]
    docs, chunks, _ = small_corpus()
    text_of = dict(zip(docs["doc_id"], (" ".join(t.split()) for t in docs["text"])))
    title_of = dict(zip(docs["doc_id"], docs["title"]))
    for split in ("train", "val"):
        f = parts[split]
        assert set(f["kind"]) == {"title_chunk", "adjacent_chunks"}
        for r in f.iter_rows(named=True):
            doc = text_of[r["doc_id"]]
            assert r["positive"] in doc  # the positive is text of the anchor's own document
            if r["kind"] == "title_chunk":
                assert r["anchor"] == title_of[r["doc_id"]]
            else:
                assert r["anchor"] in doc and r["anchor"] != r["positive"]
                assert doc.index(r["anchor"]) < doc.index(r["positive"])
        texts = f["anchor"].to_list() + f["positive"].to_list()
        assert len(texts) == len(set(texts))  # a text appears once per split: in-batch negatives are negatives
    assert stats["train.examples"] == parts["train"].height


def test_relation_examples_mark_both_entities_and_balance_no_relation(tmp_path):
    (parts, stats) = _all()["relation"]
    _, _, triples = small_corpus()
    for split in ("train", "val"):
        f = parts[split]
        assert set(f["label"]) <= set(LABELS)
        for t in f["text"]:
            assert all(t.count(m) == 1 for m in ("<e1>", "</e1>", "<e2>", "</e2>")), t
            assert t.index("<e1>") < t.index("</e1>") and t.index("<e2>") < t.index("</e2>")
        pos = f.filter(pl.col("label") != NO_RELATION)
        n_neg = f.height - pos.height
        per_class = pos.height / pos["label"].n_unique()
        assert abs(n_neg - per_class) <= 1, (split, n_neg, per_class)  # balanced to the mean class size
    assert {"returns", "raises", "subclass_of", "defaults_to"} <= set(parts["train"]["label"])
    # every triple accounted for: used or skipped with a reason
    skipped = sum(v for k, v in stats.items() if k.startswith("skipped."))
    assert stats["triples_used"] + skipped == stats["triples_in"] == triples.height
    write_labels(tmp_path)
    assert json.loads((tmp_path / "labels.json").read_text()) == [*RELATIONS, "no_relation"]


def test_entity_marking_tolerates_markup_and_reports_why_not():
    sent = "*Annotation* assignment is the\ncombination of a statement."
    found = find_entities(sent, "Annotation assignment", "combination")
    assert mark(sent, *found) == "<e1>*Annotation* assignment</e1> is the <e2>combination</e2> of a statement."
    assert find_entities(sent, "Nothing here", "combination") == "subject_not_in_evidence"
    assert find_entities(sent, "statement", "state") == "object_not_in_evidence"  # no match inside a word


def test_sft_examples_use_the_role_markers_and_account_for_every_triple():
    (parts, stats) = _all()["sft"]
    _, _, triples = small_corpus()
    train = parts["train"]
    assert train.height > 20
    for r in train.iter_rows(named=True):
        assert r["prompt"].startswith("<|system|>") and r["prompt"].endswith("<|end|><|assistant|>")
        assert "<|user|>" in r["prompt"] and r["subject"] in r["prompt"]
        assert r["response"].endswith("<|end|>") and r["response"].startswith(r["object"])
        assert "Evidence:" in r["response"]
    assert train["prompt"].n_unique() == train.height  # one answer per question
    skipped = sum(v for k, v in stats.items() if k.startswith("skipped."))
    assert stats["triples_used"] + skipped == stats["triples_in"] == triples.height


def test_sft_max_len_drops_long_examples_with_a_reason():
    docs, chunks, triples = small_corpus()
    tok = _Tok()
    n_tokens = lambda r: len(tok(r["prompt"])["input_ids"]) + len(tok(r["response"])["input_ids"])  # noqa: E731
    everything, _ = build_sft(triples, chunks, docs, SftConfig(max_len=10_000), tok)
    limit = sorted(n_tokens(r) for r in everything["train"].iter_rows(named=True))[everything["train"].height // 2]
    parts, stats = build_sft(triples, chunks, docs, SftConfig(max_len=limit), tok)
    assert stats["skipped.too_long"] > 0 and 0 < parts["train"].height < everything["train"].height
    assert all(n_tokens(r) <= limit for r in parts["train"].iter_rows(named=True))


def test_encode_sft_masks_exactly_the_prompt_tokens_with_a_real_tokenizer(trained_tokenizer):
    tok = trained_tokenizer
    (parts, _) = _all()["sft"]
    for r in parts["train"].head(25).iter_rows(named=True):
        ids, labels = encode_sft(tok, r["prompt"], r["response"], max_len=512)
        n_prompt = len(tok(r["prompt"], add_special_tokens=False)["input_ids"])
        assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert IGNORE_INDEX not in labels[n_prompt:] and labels[n_prompt:] == ids[n_prompt:]
        assert len(ids) == len(labels) == n_prompt + len(tok(r["response"], add_special_tokens=False)["input_ids"])
        assert ids[n_prompt - 1] == tok.convert_tokens_to_ids("<|assistant|>")
        assert ids[-1] == tok.convert_tokens_to_ids("<|end|>")
        assert tok.decode(ids) == r["prompt"] + r["response"]
    # the prompt ends in "x" and the response starts with "xxxx": encoded in one pass BPE would merge them
    prompt, response = chat_prompt("Say it", system="") + "x", "xxxx" + chat_response(" and more words" * 5)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    ids, labels = encode_sft(tok, prompt, response, 512)
    assert labels.count(IGNORE_INDEX) == n_prompt and labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    cut_ids, cut_labels = encode_sft(tok, prompt, response, n_prompt + 3)  # too long: the response end is cut
    assert cut_ids == ids[: n_prompt + 3] and cut_labels == labels[: n_prompt + 3]
    with pytest.raises(ValueError, match="no room"):
        encode_sft(tok, prompt, response, n_prompt)


def test_mixing_inside_datasets_keeps_the_same_documents_everywhere(tmp_path):
    mix = (("alpha", 0.5), ("beta", 0.25), ("gamma", 0.25))
    built = _all(mix=mix)
    shares = {}
    for name, (parts, stats) in built.items():
        for stem, w in mix:
            s = next(k for k in stats if k.startswith("mix.share.") and mixing.source_stem(k[10:]) == stem)
            shares.setdefault(stem, set()).add(stats[s])
            assert abs(stats[s] - w) <= 3 / stats["mix.docs_kept"], (name, stem)
        assert stats["docs.mixed_out"] > 0
        assert write_splits(tmp_path, parts) == parts["train"].height + parts["val"].height
    assert all(len(v) == 1 for v in shares.values())  # one doc plan, shared by every dataset
    natural = _all()
    for name in built:
        assert set(built[name][0]["train"]["doc_id"]) < set(natural[name][0]["train"]["doc_id"])
        assert built[name][0]["val"].equals(natural[name][0]["val"])  # val is never mixed
