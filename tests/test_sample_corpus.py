"""The embedded sample corpus: real English, deterministic, proportional limits, atomic writes."""

from __future__ import annotations

import json
import os
import random
import re
import string
from pathlib import Path

import pytest

from ml import fsutil
from ml.sample_corpus import SOURCES, build_sample_corpus, iter_documents, write_sample_corpus

FIELDS = {"title", "content", "url", "source_kind"}
STOP_WORDS = frozenset(
    "the a an of to is and in it that for be this are as or with by on not if from at which".split()
)


def looks_english(text: str) -> bool:
    """At least 10% of the words are common English function words (prose is ~30%)."""
    words = re.findall(r"[a-z]+", text.lower())
    return bool(words) and sum(w in STOP_WORDS for w in words) / len(words) >= 0.1


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[dict]]:
    return build_sample_corpus()


def test_looks_english_separates_prose_from_junk():
    rng = random.Random(0)
    junk = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(200))
    assert not looks_english(junk)
    assert looks_english("Return the number of items in the list that are equal to the value.")


def test_default_build_is_thousands_of_real_english_documents(corpus):
    assert tuple(corpus) == SOURCES
    assert sum(len(docs) for docs in corpus.values()) >= 2000
    for source, docs in corpus.items():
        assert docs, source
        for doc in docs:
            assert set(doc) == FIELDS
            assert doc["source_kind"] == source
            for key in ("title", "content", "url"):
                assert isinstance(doc[key], str) and doc[key].strip(), (source, doc["title"], key)
            assert len(doc["content"].split()) >= 25, doc["title"]
            assert doc["url"].startswith("https://docs.python.org/3/")
        english = sum(looks_english(doc["content"]) for doc in docs)
        assert english > 0.9 * len(docs), (source, english, len(docs))
        # Mostly ASCII, though not all: the pydoc topics use typographic quotes and dashes.
        for doc in docs:
            ascii_chars = sum(ch.isascii() for ch in doc["content"])
            assert ascii_chars >= 0.98 * len(doc["content"]), (source, doc["title"])


def test_stdlib_docstrings_are_named_and_linked_by_qualified_name(corpus):
    by_title = {doc["title"]: doc for doc in corpus["stdlib_docstrings"]}
    decode = by_title["json.decoder.JSONDecoder.raw_decode"]
    assert decode["url"] == "https://docs.python.org/3/library/json.html#json.decoder.JSONDecoder.raw_decode"
    assert decode["content"].startswith("Decode a JSON document from")
    assert "json" in by_title  # a package docstring is named after the package, not __init__
    assert not any(title.startswith("json.__init__") for title in by_title)
    # Test suites and third-party code are not part of the corpus.
    excluded = (r"(^|\.)tests?(\.|$)", r"idle_test", r"site-packages")
    assert not [t for t in by_title if any(re.search(p, t) for p in excluded)]


def test_min_words_filters_and_keeps_order():
    default = list(iter_documents("pydoc_topics"))
    longer = list(iter_documents("pydoc_topics", min_words=50))
    assert longer == [doc for doc in default if len(doc["content"].split()) >= 50]
    assert 0 < len(longer) < len(default)


def test_documents_are_fresh_copies():
    first = next(iter_documents("pydoc_topics"))
    first["content"] = "changed"
    assert next(iter_documents("pydoc_topics"))["content"] != "changed"


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match="unknown sample source"):
        list(iter_documents("wikipedia"))


@pytest.mark.parametrize("limit", [2, 3, 50, 100, 1000])
def test_limit_is_split_in_proportion_to_availability(corpus, limit):
    available = {source: len(docs) for source, docs in corpus.items()}
    total = sum(available.values())
    limited = build_sample_corpus(limit)
    assert sum(len(docs) for docs in limited.values()) == limit
    for source, docs in limited.items():
        assert docs == corpus[source][: len(docs)]  # each source's first documents
        assert len(docs) >= 1  # limit >= number of sources
        exact = limit * available[source] / total
        # Largest-remainder rounding stays within one of the exact share; only the
        # one-per-source floor may push a tiny source above it.
        assert abs(len(docs) - exact) < 1 or len(docs) == 1


def test_small_limits():
    assert build_sample_corpus(0) == {source: [] for source in SOURCES}
    one = build_sample_corpus(1)
    assert sum(len(docs) for docs in one.values()) == 1
    assert len(one["stdlib_docstrings"]) == 1  # the single slot goes to the larger source
    with pytest.raises(ValueError):
        build_sample_corpus(-1)


def test_limit_at_or_above_availability_returns_everything(corpus):
    total = sum(len(docs) for docs in corpus.values())
    assert build_sample_corpus(None) == corpus
    assert build_sample_corpus(total) == corpus
    assert build_sample_corpus(total + 1) == corpus
    assert build_sample_corpus(10 * total) == corpus


def read_files(sample_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(sample_dir.iterdir())}


def test_write_limit_50_is_exact_deterministic_and_idempotent(tmp_path):
    result = write_sample_corpus(tmp_path, limit=50)
    sample_dir = tmp_path / "sample"
    assert set(result) == set(SOURCES)
    # Only the finished files: no temporary sibling is left behind.
    assert sorted(os.listdir(sample_dir)) == sorted(f"{source}.jsonl" for source in SOURCES)

    lines_total = 0
    for source, (path, count) in result.items():
        assert path == sample_dir / f"{source}.jsonl"
        data = path.read_bytes()
        assert data and data.endswith(b"\n")
        lines = data.decode("utf-8").splitlines()
        assert len(lines) == count > 0
        for line in lines:
            doc = json.loads(line)
            assert isinstance(doc, dict) and set(doc) == FIELDS and doc["source_kind"] == source
            assert line == json.dumps(doc, ensure_ascii=False, sort_keys=True)
        lines_total += len(lines)
    assert lines_total == 50

    first = read_files(sample_dir)
    old = 1_000_000_000  # push mtimes into the past so any rewrite would be visible
    for path, _ in result.values():
        os.utime(path, ns=(old, old))
    assert write_sample_corpus(tmp_path, limit=50) == result
    assert read_files(sample_dir) == first
    assert all(path.stat().st_mtime_ns == old for path, _ in result.values())

    # A different limit replaces the files (and again leaves no temporaries).
    bigger = write_sample_corpus(tmp_path, limit=60)
    assert sum(count for _, count in bigger.values()) == 60
    assert sorted(os.listdir(sample_dir)) == sorted(f"{source}.jsonl" for source in SOURCES)
    assert read_files(sample_dir) != first


def test_write_goes_through_hidden_temp_files_in_the_same_directory(tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace

    def spying_replace(src, dst):
        src, dst = Path(src), Path(dst)
        # At the moment of the rename the full content is already in the temp file, and a
        # *.jsonl glob (or the landing scan, which skips dot-files) cannot see it.
        assert src.parent == dst.parent
        assert src.name.startswith(".") and not src.name.endswith(".jsonl")
        assert src not in set(dst.parent.glob("*.jsonl"))
        replaced.append((src.read_bytes(), dst))
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", spying_replace)
    result = write_sample_corpus(tmp_path, limit=10)
    assert [dst for _, dst in replaced] == [path for path, _ in result.values()]
    assert all(data == dst.read_bytes() for data, dst in replaced)
