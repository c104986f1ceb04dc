"""The tokenizer (ml/tokenizer.py) and the token shards (ml/tokenized_corpus.py)."""

import json

import numpy as np
import polars as pl
import pytest
from transformers import PreTrainedTokenizerFast

from ml.tokenized_corpus import (
    CorpusConfig, CorpusFormatError, TokenShards, build_tokenized_corpus, corpus_splits, dtype_for_vocab,
)
from ml.tokenizer import (
    SPECIAL_TOKENS, TokenizerConfig, TokenizerFormatError, build_tokenizer, load_backend, load_tokenizer,
)
from tests.helpers.corpus import PARAGRAPHS, TEXTS, trained_tokenizer  # noqa: F401  (fixture)


def _docs(n=60):
    return pl.DataFrame({"doc_id": [f"doc{i:03d}" for i in range(n)], "source": ["a.jsonl"] * n,
                         "text": [TEXTS[i % len(TEXTS)] + f" Unique tail {i}." for i in range(n)]})


def test_tokenizer_round_trips_text_and_has_the_special_tokens(trained_tokenizer, tmp_path):
    tok = trained_tokenizer
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))
    assert (tok.pad_token, tok.unk_token, tok.bos_token, tok.eos_token) == ("<|pad|>", "<|unk|>", "<|bos|>", "<|eos|>")
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 3)
    assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)
    for text in PARAGRAPHS + ["", " leading space", "unseen: ЖЖЖ ∑∫ ﷽ \x00\x01"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert tok.unk_token_id not in ids  # byte-level: nothing is unknown
    assert tok("hi", add_special_tokens=True)["input_ids"] == tok("hi", add_special_tokens=False)["input_ids"]
    # role markers in a chat prompt are single special tokens; the saved chat template writes the same text
    marked = tok("<|user|>hi<|end|><|assistant|>", add_special_tokens=False)["input_ids"]
    assert marked[0] == 5 and marked[-2:] == [7, 6]
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
        "<|system|>S<|end|><|user|>Q<|end|><|assistant|>"
    # loads again from a checkpoint's copy
    tok.save_pretrained(tmp_path / "copy")
    assert load_tokenizer(tmp_path / "copy").get_vocab() == tok.get_vocab()


def test_tokenizer_stats_and_clear_errors(tmp_path):
    stats = build_tokenizer(TEXTS, TEXTS[:5], tmp_path / "t", TokenizerConfig(vocab_size=500))
    assert stats["vocab_size"] <= 500 and stats["chars_per_token.val"] > 1.5
    assert stats["special_tokens"] == 12 and stats["val_docs"] == 5
    with pytest.raises(ValueError, match="below the minimum"):
        TokenizerConfig(vocab_size=100)
    with pytest.raises(ValueError, match="train split is empty"):
        build_tokenizer([], TEXTS, tmp_path / "e")
    with pytest.raises(TokenizerFormatError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    bad = json.loads((tmp_path / "t" / "tokenizer.json").read_text())
    bad["added_tokens"][0]["content"] = "<|oops|>"  # id 0 is no longer <|pad|>
    bad["model"]["vocab"]["<|oops|>"] = bad["model"]["vocab"].pop("<|pad|>")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text(json.dumps(bad))
    with pytest.raises(TokenizerFormatError, match="the contract says"):
        load_backend(tmp_path / "bad")


def test_shards_decode_back_to_the_source_documents(trained_tokenizer, tmp_path):
    tok_dir = tmp_path / "tok"
    trained_tokenizer.save_pretrained(tok_dir)
    docs = _docs()
    parts, plan_stats = corpus_splits(docs, seed=1, val_ratio=0.25, mix_weights={})
    stats = build_tokenized_corpus(parts, tok_dir, tmp_path / "c", CorpusConfig(shard_tokens=500, batch_docs=7))
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["dtype"] == "uint16" and index["eos_id"] == 3
    for split in ("train", "val"):
        ts = TokenShards(tmp_path / "c", split)
        frame = parts[split]
        assert ts.num_docs == frame.height == stats[f"{split}.docs"] > 0
        assert ts.doc_ids == frame["doc_id"].to_list()
        for i, text in enumerate(frame["text"]):  # exact round trip, including docs cut by a shard boundary
            assert trained_tokenizer.decode(ts.doc(i).tolist()) == text
        stream = np.asarray(ts.tokens[:], dtype=np.int64)
        assert stream.size == len(ts) == stats[f"{split}.tokens"]
        ends = np.append(ts.offsets[1:], len(ts)) - 1
        assert (stream[ends] == 3).all() and (stream == 3).sum() == ts.num_docs  # one eos after each doc only
    train = TokenShards(tmp_path / "c", "train")
    assert len(train.shards) == stats["train.shards"] > 2 and all(s.size <= 500 for s in train.shards)
    raw = np.concatenate([np.fromfile(tmp_path / "c" / s["path"], dtype="<u2")
                          for s in index["splits"]["train"]["shards"]]).astype(np.int64)
    bs = 64
    assert train.num_blocks(bs) == (len(raw) - 1) // bs
    for i in range(train.num_blocks(bs)):  # blocks cross shard boundaries seamlessly
        assert np.array_equal(train.block(i, bs), raw[i * bs: i * bs + bs + 1])
    blocks = list(train.iter_blocks(bs, shuffle=True, seed=3))
    assert len(blocks) == train.num_blocks(bs) and all(b.dtype == np.int64 and b.size == bs + 1 for b in blocks)
    assert sorted(map(tuple, blocks)) == sorted(tuple(train.block(i, bs)) for i in range(train.num_blocks(bs)))
    assert np.array_equal(train.batch([2, 0], bs), np.stack([train.block(2, bs), train.block(0, bs)]))
    with pytest.raises(IndexError):
        train.block(train.num_blocks(bs), bs)
    batch = train.random_batch(np.random.default_rng(0), 4, bs)
    assert batch.shape == (4, bs + 1) and batch.max() < train.vocab_size


def test_shard_format_checks_and_dtype_choice(trained_tokenizer, tmp_path):
    assert dtype_for_vocab(16_384) == "uint16" and dtype_for_vocab(65_535) == "uint16"
    assert dtype_for_vocab(65_536) == "uint32"
    trained_tokenizer.save_pretrained(tmp_path / "tok")
    parts, _ = corpus_splits(_docs(10), seed=1, val_ratio=0.0, mix_weights={})
    build_tokenized_corpus(parts, tmp_path / "tok", tmp_path / "c", CorpusConfig(shard_tokens=100))
    empty_val = TokenShards(tmp_path / "c", "val")
    assert len(empty_val) == 0 and empty_val.num_blocks(8) == 0 and list(empty_val.iter_blocks(8)) == []
    shard = tmp_path / "c" / "train" / "shard-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])  # truncated shard
    with pytest.raises(CorpusFormatError, match="shard-00001.bin holds"):
        TokenShards(tmp_path / "c", "train")
    with pytest.raises(CorpusFormatError, match="not a tokenized_corpus"):
        TokenShards(tmp_path, "train")
