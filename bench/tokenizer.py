"""tokenizer + tokenized_corpus against plain HF ``tokenizers`` on the same text, in one run.

    python bench/tokenizer.py [--mb 20] [--vocab 16384] [--repeats 3]

Text: the embedded sample corpus (``lineage sample-corpus``), repeated until ``--mb`` MB, each copy
of a document made distinct by a numbered line, so the documents are real English and code.
Both sides get the same documents, the same train/val split and the same trainer settings
(byte-level BPE, vocab, min_frequency, special tokens):

- theirs: ``Tokenizer(BPE)`` + ``train_from_iterator`` on the train text, then ``encode_batch``
  of every document into one numpy array (what the issue names as the baseline); a second,
  stricter baseline uses ``encode_batch_fast`` (no offsets), the library's quickest path.
- ours: ``ml.tokenizer.build_tokenizer`` (train, save_pretrained, chars/token on val) and
  ``ml.tokenized_corpus.corpus_splits`` + ``build_tokenized_corpus`` (reload, encode with an
  <|eos|> after every document, shards, offsets, doc ids).

Each side runs ``--repeats`` times, in an order rotated every repeat (a later run in the
process tends to be slower); the best time counts. Prints MB/s of each and
ours / theirs (throughput ratio; goal >= 0.9, i.e. our overhead under 10% of the library's cost),
on wall time and on CPU time (process_time, every thread), which neighbours on a shared machine
disturb less.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this file is named like the standard library's ``tokenize`` (which transformers imports): take
# bench/ off the path so ``import tokenize`` finds the real one, not this script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))


def make_docs(mb: float):
    import polars as pl

    from ml.sample_corpus import build_sample_corpus

    base = [(d["content"], src) for src, ds in build_sample_corpus().items() for d in ds]
    target, rows, size, n = mb * 1_000_000, [], 0, 0
    while size < target:
        text, src = base[n % len(base)]
        text = f"{text}\nCopy {n // len(base)} of document {n % len(base)}."
        rows.append({"doc_id": f"d{n:08d}", "source": src, "text": text})
        size += len(text.encode("utf-8"))
        n += 1
    return pl.DataFrame(rows), size


def run_theirs(train: list[str], texts: list[str], vocab: int, fast: bool) -> tuple[float, float]:
    import numpy as np
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ml.tokenizer import SPECIAL_TOKENS

    t, c = time.perf_counter(), time.process_time()
    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
                                  max_token_length=32)
    tok.train_from_iterator(train, trainer)
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    encs = encode(texts, add_special_tokens=False)
    ids = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.uint16)
    assert ids.size > 0
    return time.perf_counter() - t, time.process_time() - c


def run_ours(docs, vocab: int, work: Path) -> tuple[tuple[float, float], dict]:
    from ml.datasets.splits import texts_by_split
    from ml.tokenized_corpus import CorpusConfig, build_tokenized_corpus, corpus_splits
    from ml.tokenizer import TokenizerConfig, build_tokenizer

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t, c = time.perf_counter(), time.process_time()
    texts = texts_by_split(docs, 1234, 0.05)
    build_tokenizer(texts["train"], texts["val"], work / "tok", TokenizerConfig(vocab_size=vocab))
    parts, _ = corpus_splits(docs, 1234, 0.05, {})
    stats = build_tokenized_corpus(parts, work / "tok", work / "corpus", CorpusConfig())
    return (time.perf_counter() - t, time.process_time() - c), stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--vocab", type=int, default=16_384)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from ml.datasets.splits import texts_by_split

    docs, size = make_docs(args.mb)
    by_split = texts_by_split(docs, 1234, 0.05)
    train = by_split["train"]
    # the baseline encodes the same documents in the same (train, then val) order
    texts = train + by_split["val"]
    mb = size / 1e6
    print(f"text: {docs.height} documents, {mb:.1f} MB; vocab {args.vocab}; cores {os.cpu_count()}; "
          f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'default')}")
    import transformers  # noqa: F401  (imported once up front: an import is no part of either path)

    keys = ("theirs (encode_batch)", "theirs (encode_batch_fast)", "ours")
    wall = {k: float("inf") for k in keys}
    cpu = {k: float("inf") for k in keys}
    stats = {}
    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        for r in range(args.repeats):
            runs = {}
            for k in keys[r % 3:] + keys[: r % 3]:  # rotate: a later run in a process tends to be slower
                if k == "ours":
                    runs[k], stats = run_ours(docs, args.vocab, Path(tmp) / "ours")
                else:
                    runs[k] = run_theirs(train, texts, args.vocab, k.endswith("fast)"))
            for k, (w, c) in runs.items():
                wall[k], cpu[k] = min(wall[k], w), min(cpu[k], c)
            print(f"  repeat {r + 1}: " + ", ".join(f"{k} {w:.2f}s wall / {c:.2f}s cpu" for k, (w, c) in runs.items()))
    print(f"ours wrote {int(stats['tokens'])} tokens in {int(stats['shards'])} shards "
          f"({stats['bytes'] / 1e6:.1f} MB, {stats['train.chars_per_token']:.2f} chars/token on train)")
    print(f"{'path (best of ' + str(args.repeats) + ')':<30}{'wall s':>9}{'MB/s':>9}{'cpu s':>9}")
    for k in keys:
        print(f"{k:<30}{wall[k]:>9.2f}{mb / wall[k]:>9.2f}{cpu[k]:>9.2f}")
    for k in keys[:2]:
        print(f"throughput ours / {k}: {wall[k] / wall['ours']:.3f} wall, {cpu[k] / cpu['ours']:.3f} cpu"
              "  (goal >= 0.9)")

if __name__ == "__main__":
    main()
