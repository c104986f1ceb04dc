"""tokenizer, tokenized_corpus and the three datasets as Dagster assets on a temporary instance."""

import json
from functools import lru_cache

import dagster as dg
import polars as pl
import pytest

from assets.curation import cleaned_chunks, relation_triples
from assets.datasets import embedding_dataset, relation_dataset, sft_dataset
from assets.raw_docs import raw_docs
from assets.tokenization import tokenized_corpus, tokenizer
from ml.catalog import Catalog
from ml.sample_corpus import iter_documents
from ml.store import ArtifactStore
from ml.tokenized_corpus import TokenShards
from ml.tokenizer import load_tokenizer
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from tests.conftest import write_lines

ALL = [raw_docs, cleaned_chunks, relation_triples, tokenizer, tokenized_corpus, embedding_dataset,
       relation_dataset, sft_dataset]
MINE = ["tokenizer", "tokenized_corpus", "embedding_dataset", "relation_dataset", "sft_dataset"]
DATASETS = ["embedding_dataset", "relation_dataset", "sft_dataset"]
RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}
SPLIT = {"seed": 11, "val_ratio": 0.2}


@lru_cache(maxsize=1)
def _landing_lines() -> dict[str, list[str]]:
    """Real text (the Python reference topics of the sample corpus, cut into ~600-character
    documents) as two landing files of different sizes."""
    docs = []
    for topic in iter_documents("pydoc_topics"):
        buf = []
        for para in topic["content"].split("\n\n"):
            buf.append(para)
            if sum(map(len, buf)) >= 600:
                docs.append({"title": f"{topic['title']} {len(docs)}", "content": "\n\n".join(buf),
                             "url": f"{topic['url']}#{len(docs)}"})
                buf = []
    lines = [json.dumps(d) for d in docs[:300]]
    return {"alpha.jsonl": lines[0::3], "beta.jsonl": [x for i, x in enumerate(lines) if i % 3]}


def _config(**overrides) -> dict:
    ops = {
        "tokenizer": {"vocab_size": 1024, **SPLIT},
        "tokenized_corpus": {"shard_tokens": 20_000, **SPLIT},
        **{name: dict(SPLIT) for name in DATASETS},
    }
    for name, extra in overrides.items():
        ops[name] = {**ops[name], **extra}
    return {"ops": {name: {"config": cfg} for name, cfg in ops.items()}}


def _run(instance, selection=None, run_config=None, ok=True):
    ops = (run_config or _config())["ops"]
    ops = {k: v for k, v in ops.items() if selection is None or k in selection}
    result = dg.materialize(ALL, instance=instance, resources=RESOURCES, selection=selection,
                            run_config={"ops": ops}, raise_on_error=ok)
    assert result.success is ok
    return result, {e.asset_key.to_user_string(): e.event_specific_data.materialization
                    for e in result.get_asset_materialization_events()}


def _version(mat) -> str:
    return mat.tags["dagster/data_version"]


@pytest.fixture
def landed(home):
    for name, lines in _landing_lines().items():
        write_lines(home / "landing" / name, lines)
    return home


def test_corpus_and_datasets_materialize_cache_and_record_lineage(landed):
    home = landed
    with dg.instance_for_test() as instance:
        _, first = _run(instance)
        assert all(first[a].metadata["cache_hit"].value is False for a in MINE)
        _, again = _run(instance, selection=MINE)  # unchanged inputs and config: every one a cache hit
        for a in MINE:
            assert again[a].metadata["cache_hit"].value is True, a
            assert _version(again[a]) == _version(first[a])

    store = ArtifactStore(home)
    clean = store.get("cleaned_chunks", _version(first["cleaned_chunks"]))
    docs = pl.read_parquet(clean.path / "docs" / "*.parquet")
    corpus_v = store.get("tokenized_corpus", _version(first["tokenized_corpus"]))
    tok = load_tokenizer(store.get("tokenizer", _version(first["tokenizer"])).path)
    text_of = dict(zip(docs["doc_id"], docs["text"]))
    seen = []
    for split in ("train", "val", "test"):
        shards = TokenShards(corpus_v.path, split)
        ids = shards.doc_ids
        seen += ids
        for i in range(0, len(ids), max(1, len(ids) // 8)):  # sampled docs decode back exactly
            assert tok.decode(shards.doc(i).tolist()) == text_of[ids[i]]
    assert sorted(seen) == sorted(docs["doc_id"])  # every cleaned document, once
    assert first["tokenized_corpus"].metadata["train_shards"].value > 1

    split_of = {}
    for name in DATASETS:  # no document on both sides, and the same side in every dataset and the corpus
        v = store.get(name, _version(first[name]))
        for split in ("train", "val"):
            for d in pl.read_parquet(v.path / f"{split}.parquet")["doc_id"]:
                assert split_of.setdefault(d, split) == split, (name, d)
    for split in ("train", "val"):
        for d in TokenShards(corpus_v.path, split).doc_ids:
            assert split_of.get(d, split) == split
    assert json.loads((store.get("relation_dataset", _version(first["relation_dataset"])).path
                       / "labels.json").read_text())[-1] == "no_relation"

    cat = Catalog(home)
    edges = cat.query("SELECT asset, upstream_asset FROM lineage_edges "
                      "WHERE asset IN ('tokenized_corpus', 'sft_dataset')")
    assert set(edges.iter_rows()) == {
        ("tokenized_corpus", "cleaned_chunks"), ("tokenized_corpus", "tokenizer"),
        ("sft_dataset", "cleaned_chunks"), ("sft_dataset", "relation_triples"), ("sft_dataset", "tokenizer")}
    stats = dict(cat.query("SELECT stat, value FROM dataset_stats WHERE asset = 'tokenized_corpus'").iter_rows())
    assert stats["train.docs"] + stats["val.docs"] + stats["test.docs"] == docs.height
    assert stats["mix.share.alpha.jsonl"] + stats["mix.share.beta.jsonl"] == pytest.approx(1.0)
    hits = cat.query("SELECT asset, count(*) FILTER (WHERE cache_hit) FROM asset_versions GROUP BY 1")
    assert {a: n for a, n in hits.iter_rows() if a in MINE} == {a: 1 for a in MINE}


def test_mix_weights_set_the_shares_and_a_split_mismatch_fails_clearly(landed):
    home = landed
    weights = {"alpha": 0.7, "beta": 0.3}  # alpha is the smaller file: beta is downsampled
    mixed = _config(tokenized_corpus={"mix_weights": weights}, embedding_dataset={"mix_weights": weights})
    with dg.instance_for_test() as instance:
        _run(instance, selection=["raw_docs", "cleaned_chunks", "tokenizer"])
        _, mats = _run(instance, selection=["tokenized_corpus", "embedding_dataset"], run_config=mixed)
        cat = Catalog(home)
        by_asset = {}
        for asset in ("tokenized_corpus", "embedding_dataset"):
            stats = by_asset[asset] = dict(cat.query(
                "SELECT stat, value FROM dataset_stats WHERE asset = ? AND data_version = ?",
                [asset, _version(mats[asset])]).iter_rows())
            kept = stats["mix.docs_kept"]
            for source, w in (("alpha.jsonl", 0.7), ("beta.jsonl", 0.3)):
                # tolerance: rounding of one document per source
                assert abs(stats[f"mix.share.{source}"] - w) <= 2 / kept, (asset, source, stats[f"mix.share.{source}"])
            assert stats["mix.dropped_docs.alpha.jsonl"] == 0 and stats["mix.dropped_docs.beta.jsonl"] > 0
        assert mats["tokenized_corpus"].metadata["doc_shares"].value["alpha.jsonl"] == pytest.approx(0.7, abs=0.02)
        index = json.loads((ArtifactStore(home).get("tokenized_corpus", _version(mats["tokenized_corpus"])).path
                            / "index.json").read_text())
        assert index["mixed_out_docs"] == by_asset["tokenized_corpus"]["mix.docs_dropped"] > 0

        result, _ = _run(instance, selection=["tokenized_corpus"], ok=False,
                         run_config=_config(tokenized_corpus={"seed": 99}))
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "would leak into val" in str(failure.event_specific_data.error)

        result, _ = _run(instance, selection=["embedding_dataset"], ok=False,
                         run_config=_config(embedding_dataset={"mix_weights": {"alpha": 1.0}}))
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "without a weight" in str(failure.event_specific_data.error) and "beta.jsonl" in str(
            failure.event_specific_data.error)
