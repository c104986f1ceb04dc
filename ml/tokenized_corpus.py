"""Token shards: whole cleaned documents encoded with the trained tokenizer, memory-mappable.

A split's stream is ``doc_0 <|eos|> doc_1 <|eos|> ...``, cut into fixed-size shards, so a document may
continue in the next shard; ``TokenShards`` hides that. Layout: ml/FORMATS.md, "tokenized_corpus", and
DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import polars as pl

from ml.datasets.mixing import plan_docs
from ml.tokenizer import EOS, batched, encode_texts, load_backend, text_encoder

INDEX = "index.json"
SPLITS = ("train", "val", "test")  # test: held out for model_evaluation (empty when test_ratio is 0)
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def dtype_for_vocab(vocab_size: int) -> str:
    """uint16 while every id fits (vocab_size <= 65,535, as FORMATS.md states), else uint32."""
    return "uint16" if vocab_size <= 65_535 else "uint32"


@dataclass(frozen=True)
class CorpusConfig:
    shard_tokens: int = 1 << 26
    """Tokens per shard file (64 Mi tokens = 128 MiB at uint16)."""
    batch_docs: int = 2_000
    """Documents per encode_batch call."""

    def __post_init__(self) -> None:
        if self.shard_tokens < 1 or self.batch_docs < 1:
            raise ValueError("shard_tokens and batch_docs must be >= 1")


class ShardWriter:
    """Appends token arrays to ``<dir>/shard-%05d.bin`` files of exactly ``shard_tokens`` tokens."""

    def __init__(self, root: Path, split: str, dtype: str, shard_tokens: int):
        self.root, self.split, self.dtype, self.shard_tokens = root, split, DTYPES[dtype], shard_tokens
        (root / split).mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []
        self._f = None
        self._in_shard = 0

    def write(self, arr: np.ndarray) -> None:
        arr = arr.astype(self.dtype, copy=False)
        pos = 0
        while pos < arr.size:
            if self._f is None or self._in_shard == self.shard_tokens:
                self._open_next()
            take = min(self.shard_tokens - self._in_shard, arr.size - pos)
            self._f.write(arr[pos:pos + take].tobytes())
            self._in_shard += take
            self.shards[-1]["tokens"] += take
            pos += take

    def _open_next(self) -> None:
        if self._f is not None:
            self._f.close()
        rel = f"{self.split}/shard-{len(self.shards):05d}.bin"
        self._f = open(self.root / rel, "wb")
        self.shards.append({"path": rel, "tokens": 0})
        self._in_shard = 0

    def close(self) -> list[dict]:
        if self._f is not None:
            self._f.close()
            self._f = None
        return self.shards


def encode_split(enc, texts: Iterable[str], eos_id: int, dtype: str, batch_docs: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (tokens with an <|eos|> after every document, per-document lengths incl. eos) per batch."""
    np_dtype = DTYPES[dtype]
    for batch in batched(texts, batch_docs):
        ids = encode_texts(enc, batch)
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(chain.from_iterable(ids), dtype=np_dtype, count=int(lens.sum()))
        yield np.insert(flat, np.cumsum(lens), eos_id), lens + 1


def corpus_splits(docs: pl.DataFrame, seed: int, val_ratio: float, mix_weights: dict[str, float],
                  test_ratio: float = 0.0) -> tuple[dict[str, pl.DataFrame], dict[str, float]]:
    """Cleaned documents (doc_id, source, text) by split: ``doc_split`` for train/val/test, then the mix
    applied to train (ml/datasets/mixing.py). Stream order = the documents' order in ``docs``."""
    plan = plan_docs(docs, seed, val_ratio, mix_weights, test_ratio=test_ratio)
    parts = plan.assign(docs.select("doc_id", "source", "text"))
    return {k: parts[k] for k in SPLITS}, plan.stats


def split_leak(tokenizer_config: dict, tokenizer_version: str, seed: int, val_ratio: float,
               test_ratio: float) -> str | None:
    """Why encoding with these split settings would leak the tokenizer's training text into val or test
    (the tokenizer was trained on the train split of its own settings, recorded in its ``config``), or None."""
    trained = (tokenizer_config.get("seed"), tokenizer_config.get("val_ratio"), tokenizer_config.get("test_ratio", 0.0))
    if trained == (seed, val_ratio, test_ratio):
        return None
    return (f"tokenized_corpus splits with seed={seed}, val_ratio={val_ratio}, test_ratio={test_ratio} but "
            f"tokenizer@{tokenizer_version} was trained with seed={trained[0]}, val_ratio={trained[1]}, "
            f"test_ratio={trained[2]}: its training text would leak into val or test")


def build_tokenized_corpus(splits: dict[str, pl.DataFrame], tokenizer_dir: Path, out: Path,
                           cfg: CorpusConfig = CorpusConfig(), mixed_out_docs: int = 0) -> dict[str, float]:
    """Encode ``splits`` (split -> frame with doc_id, source, text, in stream order) into ``out``.
    ``mixed_out_docs``: train documents the mix left out (recorded in index.json, so that
    val / (train + val + mixed_out) is the split's val share)."""
    tok = load_backend(tokenizer_dir)
    enc = text_encoder(tok)
    vocab_size = tok.get_vocab_size()
    eos_id = tok.token_to_id(EOS)
    dtype = dtype_for_vocab(vocab_size)
    index = {"dtype": dtype, "vocab_size": vocab_size, "eos_id": eos_id, "shard_tokens": cfg.shard_tokens,
             "mixed_out_docs": int(mixed_out_docs), "splits": {}}
    stats: dict[str, float] = {"vocab_size": vocab_size, "bytes_per_token": DTYPES[dtype].itemsize}
    (out / "offsets").mkdir(parents=True, exist_ok=True)
    (out / "doc_ids").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        frame = splits.get(split, pl.DataFrame(schema={"doc_id": pl.String, "source": pl.String, "text": pl.String}))
        if frame["text"].null_count():
            bad = frame.filter(pl.col("text").is_null())["doc_id"].head(3).to_list()
            raise ValueError(f"{frame['text'].null_count()} {split} documents have no text (null), e.g. {bad}")
        writer = ShardWriter(out, split, dtype, cfg.shard_tokens)
        lengths = []
        for toks, lens in encode_split(enc, frame["text"], eos_id, dtype, cfg.batch_docs):
            writer.write(toks)
            lengths.append(lens)
        shards = writer.close()
        lens = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        np.save(out / "offsets" / f"{split}.npy", np.cumsum(lens) - lens)
        ids = frame.select("doc_id", "source").with_columns(tokens=pl.Series(lens - 1))
        ids.write_parquet(out / "doc_ids" / f"{split}.parquet")
        if split == "train" and ids.height:
            per_source = ids.group_by("source").agg(pl.col("tokens").sum())
            src_total = max(int(per_source["tokens"].sum()), 1)
            stats.update({f"mix.token_share.{src}": int(n) / src_total for src, n in per_source.iter_rows()})
        total = int(lens.sum())
        index["splits"][split] = {"shards": shards, "docs": frame.height, "tokens": total}
        chars = int(frame["text"].str.len_chars().sum() or 0)
        stats.update({f"{split}.docs": frame.height, f"{split}.tokens": total, f"{split}.shards": len(shards),
                      f"{split}.bytes": total * DTYPES[dtype].itemsize,
                      f"{split}.chars_per_token": chars / (total - frame.height) if total > frame.height else 0.0})
    (out / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    stats["tokens"] = sum(index["splits"][s]["tokens"] for s in SPLITS)
    stats["shards"] = sum(len(index["splits"][s]["shards"]) for s in SPLITS)
    stats["bytes"] = stats["tokens"] * DTYPES[dtype].itemsize
    return stats


class CorpusFormatError(ValueError):
    """A tokenized_corpus version that is incomplete or inconsistent with its index.json."""


class _Concat:
    """Read-only view of several memmaps as one 1-D array (int and slice indexing, len)."""

    def __init__(self, parts: Sequence[np.ndarray], dtype: np.dtype):
        self.parts = list(parts)
        self.dtype = dtype
        sizes = np.array([p.size for p in self.parts], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.shape = (int(self.starts[-1]),)
        self.size = self.shape[0]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.size if key < 0 else 0)
            if not 0 <= i < self.size:
                raise IndexError(f"token {key} out of range for {self.size} tokens")
            s = int(np.searchsorted(self.starts, i, side="right")) - 1
            return self.parts[s][i - self.starts[s]]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            if step != 1:
                return self[start:stop][::step]
            return self._range(start, max(start, stop))
        raise TypeError(f"unsupported index {key!r}: use an int or a slice")

    def _range(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        out = []
        s = max(first, 0)
        while start < stop and s < len(self.parts):
            lo = start - self.starts[s]
            hi = min(stop, self.starts[s + 1]) - self.starts[s]
            out.append(np.asarray(self.parts[s][lo:hi]))
            start = int(self.starts[s] + hi)
            s += 1
        return np.concatenate(out) if out else np.zeros(0, self.dtype)

    def __array__(self, dtype=None, copy=None):
        arr = self._range(0, self.size)
        return arr.astype(dtype) if dtype is not None else arr


class TokenShards:
    """Memory-mapped reader of one split of a tokenized_corpus version.

    ``tokens``: the split's token stream (a ``np.memmap`` when it is one shard, else a read-only
    concatenating view supporting ``len`` and slicing); ``block(i, block_size)`` is the i-th
    non-overlapping window of ``block_size + 1`` tokens (input ``[:-1]``, target ``[1:]``).
    """

    def __init__(self, version_dir: Path | str, split: str):
        self.path = Path(version_dir)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        ipath = self.path / INDEX
        if not ipath.is_file():
            raise CorpusFormatError(f"no {INDEX} in {self.path}: not a tokenized_corpus version")
        index = json.loads(ipath.read_text("utf-8"))
        if index.get("dtype") not in DTYPES:
            raise CorpusFormatError(f"{ipath}: unsupported dtype {index.get('dtype')!r}")
        self.split = split
        self.index = index
        self.dtype = DTYPES[index["dtype"]]
        self.vocab_size = int(index["vocab_size"])
        self.eos_id = int(index["eos_id"])
        meta = index["splits"].get(split)
        if meta is None:
            raise CorpusFormatError(f"{ipath} has no split {split!r}")
        self.shards: list[np.memmap] = []
        for shard in meta["shards"]:
            f = self.path / shard["path"]
            if not f.is_file():
                raise CorpusFormatError(f"missing shard {f}")
            if f.stat().st_size != shard["tokens"] * self.dtype.itemsize:
                raise CorpusFormatError(f"{f} holds {f.stat().st_size} bytes, index.json says "
                                        f"{shard['tokens']} tokens of {self.dtype.itemsize} bytes")
            self.shards.append(np.memmap(f, dtype=self.dtype, mode="r"))
        self.num_tokens = int(meta["tokens"])
        self.num_docs = int(meta["docs"])
        if sum(s.size for s in self.shards) != self.num_tokens:
            raise CorpusFormatError(f"{ipath}: shard sizes of {split!r} do not add up to {self.num_tokens}")
        self.tokens = self.shards[0] if len(self.shards) == 1 else _Concat(self.shards, self.dtype)
        self.offsets = np.load(self.path / "offsets" / f"{split}.npy")
        if self.offsets.size != self.num_docs:
            raise CorpusFormatError(f"offsets/{split}.npy has {self.offsets.size} entries for {self.num_docs} docs")

    def __len__(self) -> int:
        return self.num_tokens

    @property
    def doc_ids(self) -> list[str]:
        return pl.read_parquet(self.path / "doc_ids" / f"{self.split}.parquet", columns=["doc_id"])["doc_id"].to_list()

    def doc(self, i: int) -> np.ndarray:
        """Token ids of document i (stream order), without its trailing <|eos|>."""
        if not 0 <= i < self.num_docs:
            raise IndexError(f"document {i} out of range for {self.num_docs} documents")
        end = int(self.offsets[i + 1]) if i + 1 < self.num_docs else self.num_tokens
        return np.asarray(self.tokens[int(self.offsets[i]):end - 1], dtype=np.int64)

    def num_blocks(self, block_size: int) -> int:
        """Non-overlapping blocks of block_size inputs (+1 target token) in the stream."""
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        return max(0, (self.num_tokens - 1) // block_size)

    def block(self, i: int, block_size: int) -> np.ndarray:
        """int64 array of block_size + 1 tokens starting at i * block_size."""
        n = self.num_blocks(block_size)
        if not 0 <= i < n:
            raise IndexError(f"block {i} out of range: {n} blocks of {block_size} tokens in {self.split}")
        start = i * block_size
        return np.asarray(self.tokens[start:start + block_size + 1], dtype=np.int64)

    def batch(self, indices: Sequence[int], block_size: int) -> np.ndarray:
        """int64 array [len(indices), block_size + 1] of the given blocks."""
        return np.stack([self.block(int(i), block_size) for i in indices]) if len(indices) else \
            np.zeros((0, block_size + 1), np.int64)

    def iter_blocks(self, block_size: int, *, shuffle: bool = False, seed: int = 0,
                    start: int = 0) -> Iterator[np.ndarray]:
        """Every block once, in order or in a seeded permutation; ``start`` skips the first blocks
        of that order (to resume an interrupted epoch)."""
        order = np.arange(self.num_blocks(block_size))
        if shuffle:
            order = np.random.default_rng(seed).permutation(order)
        for i in order[start:]:
            yield self.block(int(i), block_size)

    def random_batch(self, rng: np.random.Generator, batch_size: int, block_size: int) -> np.ndarray:
        """nanoGPT-style: batch_size windows of block_size + 1 tokens at random offsets."""
        if self.num_tokens < block_size + 1:
            raise ValueError(f"split {self.split!r} has {self.num_tokens} tokens, fewer than one block of "
                             f"{block_size} + 1")
        starts = rng.integers(0, self.num_tokens - block_size, size=batch_size)
        return np.stack([np.asarray(self.tokens[s:s + block_size + 1], dtype=np.int64) for s in starts])
