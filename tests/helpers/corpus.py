"""Small synthetic corpora shared by the corpus and dataset tests: ``TEXTS`` (odd text a byte-level
tokenizer must keep), the session-wide ``trained_tokenizer`` fixture (registered in conftest.py), and
``small_corpus`` (docs, chunks and real triples like the stages' outputs)."""

from __future__ import annotations

import random
from functools import lru_cache

import polars as pl
import pytest

from ml.cleaned_chunks.chunking import ChunkConfig, chunk_frame
from ml.relation_triples import extract_triples, get_extractor
from ml.tokenizer import TokenizerConfig, build_tokenizer, load_tokenizer

PARAGRAPHS = [
    "The archive module reads and writes compressed files; it returns a list of members.",
    "Naïve café owners — «quoted» — paid 3.50€ for 😀 emoji and 中文 text.\n\n\tIndented   spaces  stay.",
    "def f(x):\n    return x < 0 and s == ''  # code survives\n",
    "Strings like <|eos|> or <e1>tags</e1> inside a document are just text.",
    "Trailing whitespace and CRLF line ends\r\n are kept exactly.   ",
]
TEXTS = [f"{p} Document {i} talks about item {i * 7 % 13}." for i in range(60) for p in PARAGRAPHS[i % 5: i % 5 + 1]]


@pytest.fixture(scope="session")
def trained_tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(TEXTS * 3, TEXTS[:10], out, TokenizerConfig(vocab_size=600, min_frequency=2))
    return load_tokenizer(out)


NOUNS = ["buffer", "socket", "parser", "archive", "widget", "timer", "cursor", "channel", "ledger", "matrix",
         "queue", "record", "stream", "token", "vector", "window", "handle", "schema", "filter", "bundle"]
ERRORS = ["ValueError", "KeyError", "TypeError", "OSError", "IndexError"]
FILLER = [
    "Callers usually pass the {a} through the {b} before the loop finishes its work.",
    "Older releases kept the {a} beside the {b} in a separate configuration file.",
    "Careful readers will notice that the {a} changes whenever the {b} is refreshed.",
    "During shutdown the {a} flushes pending data into the {b} exactly once.",
]


def _doc_text(rng: random.Random, i: int) -> str:
    n = lambda: rng.choice(NOUNS)  # noqa: E731
    sents = [
        f"The load_{i} function returns a {n()} object.",
        f"The {n()}_{i} class is a subclass of Base{n().title()}.",
        f"The parse_{i} method raises {rng.choice(ERRORS)} when the input is empty.",
        f"The limit_{i} parameter defaults to {rng.randint(1, 99)}.",
    ]
    rng.shuffle(sents)
    body = []
    for s in sents:
        body.append(s)
        body.extend(rng.choice(FILLER).format(a=n(), b=n()) for _ in range(rng.randint(1, 4)))
    return " ".join(body)


@lru_cache(maxsize=None)
def small_corpus(n_docs: int = 240):
    """(docs, chunks, triples) like cleaned_chunks' docs/ and chunks/ and relation_triples' triples/."""
    rng = random.Random(7)
    sources = ["landing/alpha.jsonl", "landing/beta.jsonl.gz", "gamma.jsonl"]
    rows = [{"doc_id": f"d{i:04d}", "title": f"module{i}.api", "url": f"https://x/{i}",
             "source": sources[i % 3] if i % 5 else sources[0], "text": _doc_text(rng, i)} for i in range(n_docs)]
    docs = pl.DataFrame(rows)
    chunks = chunk_frame(docs.select("doc_id", "text"), ChunkConfig(chunk_size=60, overlap=8, min_chunk_tokens=4))
    triples, _ = extract_triples(chunks.select("chunk_id", "text"), get_extractor("simple"), min_confidence=0.3)
    return docs, chunks, triples
