import re
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

from ml.relation_triples import (
    RELATIONS,
    SPACY_HINT,
    TRIPLE_SCHEMA,
    SimpleExtractor,
    Triple,
    TripleCache,
    available,
    chunk_digest,
    default_cache_root,
    extract_triples,
    get_extractor,
    register,
    sentence_spans,
)

EX = SimpleExtractor()
PREFIX = "Some introductory words come first. "
SUFFIX = " More text follows here."


def triples_of(sentence: str) -> list[Triple]:
    return EX.extract(sentence)


def find(triples, relation, subject=None, obj=None):
    return [t for t in triples if t.relation == relation
            and (subject is None or t.subject == subject) and (obj is None or t.object == obj)]


def _words(arg: str) -> list[str]:
    return [w for w in re.findall(r"[\w.()'-]+", arg) if any(c.isalnum() for c in w)]


# One sentence per pattern family: (sentence, subject, relation, object).
FAMILIES = [
    ("Python is a high-level programming language.", "Python", "is_a", "high-level programming language"),
    ("The result is the concatenation of both strings.", "result", "is_a", "concatenation of both strings"),
    ("A dolphin is a kind of marine mammal.", "dolphin", "is_a", "marine mammal"),
    ("Python, a programming language, was created by Guido van Rossum.", "Python", "is_a", "programming language"),
    ("KeyError is a subclass of LookupError.", "KeyError", "subclass_of", "LookupError"),
    ("The OrderedDict class inherits from dict.", "OrderedDict class", "subclass_of", "dict"),
    ("The returned value is an instance of the Fraction class.", "returned value", "instance_of", "Fraction class"),
    ("The carburetor is part of the engine.", "carburetor", "part_of", "engine"),
    ("The spark plug is a component of the ignition system.", "spark plug", "part_of", "ignition system"),
    ("Norway is a member of NATO.", "Norway", "member_of", "NATO"),
    ("Each player belongs to a single team.", "player", "member_of", "single team"),
    ("Microsoft was founded in 1975.", "Microsoft", "founded_in", "1975"),
    ("Albert Einstein was born in Ulm, in the Kingdom of Württemberg.", "Albert Einstein", "born_in", "Ulm"),
    ("The Eiffel Tower is located in Paris.", "Eiffel Tower", "located_in", "Paris"),
    ("Python was created by Guido van Rossum in 1991.", "Python", "created_by", "Guido van Rossum"),
    ("The sqlite3 module was written by Gerhard Häring.", "sqlite3 module", "created_by", "Gerhard Häring"),
    ("Linus Torvalds developed the Linux kernel.", "Linux kernel", "created_by", "Linus Torvalds"),
    ("The parser uses a recursive descent algorithm.", "parser", "uses", "recursive descent algorithm"),
    ("Code objects are used by the interpreter.", "interpreter", "uses", "Code objects"),
    ('The "id()" function returns an integer.', "id() function", "returns", "integer"),
    ("The archive contains three text files.", "archive", "contains", "three text files"),
    ("A version number consists of a series of numbers.", "version number", "contains", "series of numbers"),
    ("The response object has a read() method.", "response object", "has", "read() method"),
    ("The constructor raises ValueError if the size is negative.", "constructor", "raises", "ValueError"),
    ("The timeout argument defaults to 30 seconds.", "timeout argument", "defaults_to", "30 seconds"),
    ('The default mode is "rb".', "mode", "defaults_to", "rb"),
    ("Aspirin, also known as acetylsalicylic acid, is widely used.", "acetylsalicylic acid", "alias_of", "Aspirin"),
    ("'restart' is an alias for 'run'.", "restart", "alias_of", "run"),
    ("The Simple API for XML (SAX) is an event-driven interface.", "SAX", "alias_of", "Simple API for XML"),
    ("The expression x.f(1) is equivalent to C.f(x, 1).", "expression x.f(1)", "equivalent_to", "C.f(x, 1)"),
    ("The zipfile module provides tools to create ZIP archives.", "zipfile module", "provides", "tools"),
    ("The callback accepts a single string argument.", "callback", "accepts", "single string argument"),
]


@pytest.mark.parametrize("sentence,subject,relation,obj", FAMILIES, ids=[f[2] + ":" + f[0][:30] for f in FAMILIES])
def test_pattern_families(sentence, subject, relation, obj):
    text = PREFIX + sentence + SUFFIX
    triples = EX.extract(text)
    hits = find(triples, relation, subject, obj)
    assert hits, f"no ({subject!r}, {relation}, {obj!r}) in {triples}"
    t = hits[0]
    assert 0.0 <= t.confidence <= 1.0 and t.confidence >= 0.3
    evidence = text[t.start:t.end]
    assert evidence == sentence  # the evidence span is the sentence, offsets into the chunk
    for word in _words(t.subject) + _words(t.object):
        assert word in evidence, (word, evidence)


def test_every_family_label_is_documented():
    assert {f[2] for f in FAMILIES} <= set(RELATIONS)
    assert 12 <= len(RELATIONS) <= 20
    assert all(isinstance(d, str) and d for d in RELATIONS.values())


def test_coordinated_objects_give_one_triple_each():
    triples = triples_of("Microsoft was founded in 1975 by Bill Gates and Paul Allen.")
    assert find(triples, "founded_in", "Microsoft", "1975")
    assert find(triples, "created_by", "Microsoft", "Bill Gates")
    assert find(triples, "created_by", "Microsoft", "Paul Allen")
    both = triples_of("The method raises TypeError or ValueError.")
    assert {t.object for t in find(both, "raises", "method")} == {"TypeError", "ValueError"}


@pytest.mark.parametrize("sentence", [
    "Python is not a snake.",
    "The file does not contain any data.",
    "This function never returns a value.",
    "The archive contains no files.",
    "KeyError isn't a subclass of TypeError.",
    "It is a reserved word.",
    "They were founded in 1990.",
    "This module provides the components needed to build an importer.",
    "Its value is a string.",
    "Is Python a programming language?",
    "Does the parser use a stack?",
    "Return the enum member matching the name.",
    "Raise ValueError if the input is empty.",
])
def test_negation_pronouns_questions_imperatives_give_nothing(sentence):
    assert triples_of(sentence) == []


def test_hedges_lower_confidence():
    plain = find(triples_of("Python is a programming language."), "is_a", "Python")[0]
    hedged = find(triples_of("Python may be a programming language."), "is_a", "Python")[0]
    usually = find(triples_of("The parser usually uses a stack."), "uses", "parser")[0]
    assert hedged.confidence < plain.confidence
    assert usually.confidence < find(triples_of("The parser uses a stack."), "uses", "parser")[0].confidence


def test_hypothetical_clause_falls_below_default_threshold():
    t = find(triples_of("If the argument is a string, it is decoded first."), "is_a", "argument")
    assert t and t[0].confidence < 0.3
    main = find(triples_of("If the file is missing, the loader raises FileNotFoundError."), "raises", "loader")
    assert main and main[0].confidence >= 0.3  # the main clause after the comma is not penalised


def test_long_arguments_cost_confidence():
    short = find(triples_of("The cache is a dictionary."), "is_a")[0]
    long = find(triples_of("The cache is a small ordered dictionary of compiled patterns."), "is_a")[0]
    assert long.confidence < short.confidence


def test_code_and_doctest_lines_are_not_prose():
    text = (
        "Parse the configuration.\n\n"
        ">>> x = parse('a is a b')\n"
        ">>> x.value is a thing\n\n"
        "Usage::\n\n"
        "    result is a list\n\n"
        "The parser is a small state machine.\n"
    )
    triples = EX.extract(text)
    assert [(t.subject, t.relation, t.object) for t in triples] == [("parser", "is_a", "small state machine")]
    t = triples[0]
    assert text[t.start:t.end] == "The parser is a small state machine."


def test_sentence_spans_respect_abbreviations_and_wrapping():
    text = ("A codec is a module, e.g. the utf-8 codec.  It is fast.\n"
            "The reader is a\n  buffered stream of bytes.")
    spans = [text[a:b] for a, b in sentence_spans(text)]
    assert spans == ["A codec is a module, e.g. the utf-8 codec.", "It is fast.",
                     "The reader is a\n  buffered stream of bytes."]
    t = find(EX.extract(text), "is_a", "reader")[0]
    assert t.object == "buffered stream of bytes"


def test_triple_validates():
    with pytest.raises(ValueError):
        Triple("a", "is_a", "b", 1.5, 0, 1)
    with pytest.raises(ValueError):
        Triple("a", "is_a", "b", 0.5, 3, 1)


# --- extract_triples -----------------------------------------------------------------------

CHUNKS = pl.DataFrame({
    "chunk_id": ["c1", "c2", "c3", "c4"],
    "text": [
        "Python is a programming language. Python was created by Guido van Rossum.",
        "Nothing to see here, just words.",
        "The parser may use a stack. KeyError is a subclass of LookupError.",
        "Norway is a member of NATO.",
    ],
})


def test_extract_triples_frame_order_and_stats():
    df, stats = extract_triples(CHUNKS, EX, min_confidence=0.0)
    assert df.schema == pl.Schema(TRIPLE_SCHEMA)
    assert df["chunk_id"].to_list() == ["c1", "c1", "c3", "c3", "c4"]
    starts = df.filter(pl.col("chunk_id") == "c1")["evidence_start"].to_list()
    assert starts == sorted(starts) and starts[0] == 0 and starts[1] > 0
    assert set(df["extractor"]) == {f"simple@{EX.version}"}
    for row in df.iter_rows(named=True):
        text = CHUNKS.filter(pl.col("chunk_id") == row["chunk_id"])["text"][0]
        assert row["evidence"] == text[row["evidence_start"]:row["evidence_end"]]
    assert stats["chunks"] == 4 and stats["chunks_parsed"] == 4 and stats["chunks_cached"] == 0
    assert stats["triples_raw"] == stats["triples"] == 5 and stats["below_min_confidence"] == 0
    assert all(f"relation.{label}" in stats for label in RELATIONS)
    assert stats["relation.is_a"] == 1 and stats["relation.created_by"] == 1 and stats["relation.uses"] == 1
    assert sum(stats[f"relation.{label}"] for label in RELATIONS) == stats["triples"]
    hist = {k: v for k, v in stats.items() if k.startswith("confidence_hist.")}
    assert list(hist) == [f"confidence_hist.{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)]
    assert sum(hist.values()) == stats["triples_raw"]


def test_min_confidence_filters_rows_and_counts():
    all_df, all_stats = extract_triples(CHUNKS, EX, min_confidence=0.0)
    hedged = all_df.filter(pl.col("relation") == "uses")["confidence"][0]
    df, stats = extract_triples(CHUNKS, EX, min_confidence=hedged + 0.01)
    assert df.height == all_df.height - 1 and "uses" not in df["relation"].to_list()
    assert stats["triples_raw"] == all_stats["triples_raw"]
    assert stats["below_min_confidence"] == 1 and stats["relation.uses"] == 0
    assert sum(v for k, v in stats.items() if k.startswith("confidence_hist.")) == stats["triples_raw"]
    assert (df["confidence"] >= hedged + 0.01).all()
    with pytest.raises(ValueError):
        extract_triples(CHUNKS, EX, min_confidence=1.5)
    with pytest.raises(ValueError):
        extract_triples(CHUNKS.rename({"text": "body"}), EX)


def test_empty_frame():
    df, stats = extract_triples(pl.DataFrame({"chunk_id": [], "text": []}, schema={"chunk_id": pl.String, "text": pl.String}), EX)
    assert df.height == 0 and df.schema == pl.Schema(TRIPLE_SCHEMA) and stats["chunks"] == 0


class Counting:
    """Wraps an extractor and counts extract() calls."""

    def __init__(self, inner, version=None):
        self.inner = inner
        self.name = inner.name
        self.version = version or inner.version
        self.calls = 0

    def extract(self, text):
        self.calls += 1
        return self.inner.extract(text)


def test_cache_second_run_parses_nothing(tmp_path):
    ex = Counting(EX)
    cache = TripleCache(tmp_path, ex.name, ex.version)
    df1, s1 = extract_triples(CHUNKS, ex, cache=cache)
    assert s1["chunks_parsed"] == 4 and ex.calls == 4
    df2, s2 = extract_triples(CHUNKS, ex, cache=cache)
    assert s2["chunks_parsed"] == 0 and s2["chunks_cached"] == 4 and s2["texts_parsed"] == 0
    assert ex.calls == 4
    assert df2.equals(df1)
    assert {k: v for k, v in s2.items() if not k.startswith("chunks")} == \
           {k: v for k, v in s1.items() if not k.startswith("chunks")} | {"texts_parsed": 0}


def test_cache_changed_chunk_is_parsed(tmp_path):
    ex = Counting(EX)
    cache = TripleCache(tmp_path, ex.name, ex.version)
    extract_triples(CHUNKS, ex, cache=cache)
    changed = CHUNKS.with_columns(
        pl.when(pl.col("chunk_id") == "c4").then(pl.lit("Sweden is a member of the EU.")).otherwise(pl.col("text")).alias("text"))
    df, stats = extract_triples(changed, ex, cache=cache)
    assert stats["chunks_parsed"] == 1 and stats["chunks_cached"] == 3 and ex.calls == 5
    assert find_rows(df, "c4") == [("Sweden", "member_of", "EU")]


def find_rows(df, chunk_id):
    return [(r["subject"], r["relation"], r["object"]) for r in df.filter(pl.col("chunk_id") == chunk_id).iter_rows(named=True)]


def test_cache_other_version_misses_and_survives_on_disk(tmp_path):
    v1 = Counting(EX)
    extract_triples(CHUNKS, v1, cache=TripleCache(tmp_path, v1.name, v1.version))
    v2 = Counting(EX, version="2")
    _, s = extract_triples(CHUNKS, v2, cache=TripleCache(tmp_path, v2.name, v2.version))
    assert s["chunks_parsed"] == 4 and v2.calls == 4
    # a fresh object over the same directory sees what the first one wrote
    again = Counting(EX)
    _, s = extract_triples(CHUNKS, again, cache=TripleCache(tmp_path, again.name, again.version))
    assert s["chunks_cached"] == 4 and again.calls == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["simple"]
    assert sorted(p.name for p in (tmp_path / "simple").iterdir()) == sorted({EX.version, "2"})
    # options that change the output change the version, hence the cache key
    assert SimpleExtractor(max_arg_words=5).version != EX.version
    with pytest.raises(ValueError):
        extract_triples(CHUNKS, v2, cache=TripleCache(tmp_path, v1.name, v1.version))


def test_cache_zero_triple_chunks_and_raw_storage(tmp_path):
    cache = TripleCache(tmp_path, EX.name, EX.version)
    df, _ = extract_triples(CHUNKS, EX, min_confidence=0.9, cache=cache)
    empty = chunk_digest(CHUNKS["text"][1])
    hits = cache.get_many([empty, chunk_digest(CHUNKS["text"][2]), "0" * 32])
    assert hits[empty] == [] and "0" * 32 not in hits
    # the cache keeps every triple; the threshold applies on the way out
    assert len(hits[chunk_digest(CHUNKS["text"][2])]) == 2
    ex = Counting(EX)
    low, s = extract_triples(CHUNKS, ex, min_confidence=0.0, cache=cache)
    assert ex.calls == 0 and s["chunks_cached"] == 4 and low.height > df.height
    shard = pl.read_parquet(cache.shards()[0])
    assert shard.columns == ["digest", "subject", "relation", "object", "confidence", "start", "end"]
    assert shard.filter(pl.col("digest") == empty)["relation"].to_list() == [None]


def test_default_cache_root(home):
    assert default_cache_root() == home.resolve() / "work" / "relation_triples" / "cache"


def test_duplicate_texts_parsed_once(tmp_path):
    ex = Counting(EX)
    dup = pl.DataFrame({"chunk_id": [1, 2], "text": ["Norway is a member of NATO."] * 2})
    df, stats = extract_triples(dup, ex, cache=TripleCache(tmp_path, ex.name, ex.version))
    assert ex.calls == 1 and stats["texts_parsed"] == 1 and stats["chunks_parsed"] == 2
    assert df["chunk_id"].to_list() == ["1", "2"]


def test_cache_concurrent_writers_and_compaction(tmp_path):
    cache = TripleCache(tmp_path, "simple", "1")
    t = Triple("A", "is_a", "B", 0.5, 0, 3)
    errors = []

    def writer(k):
        try:
            for j in range(5):
                TripleCache(tmp_path, "simple", "1").put_many({f"{k:04x}{j:04x}" + "0" * 24: [t], "f" * 32: []})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert not [p for p in cache.dir.iterdir() if not p.name.startswith("shard-")]  # no temp files left
    digests = [f"{k:04x}{j:04x}" + "0" * 24 for k in range(8) for j in range(5)]
    got = cache.get_many(digests + ["f" * 32])
    assert all(got[d] == [t] for d in digests) and got["f" * 32] == []  # each once, never doubled
    assert len(cache) == 41
    assert cache.compact() == 40 and len(cache.shards()) == 1
    assert cache.get_many(digests + ["f" * 32]) == got


def test_registry(monkeypatch):
    from ml.relation_triples import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # registrations stay local
    assert {"simple", "spacy"} <= set(available())
    with pytest.raises(ValueError, match="simple"):
        get_extractor("nope")
    assert isinstance(get_extractor("simple"), SimpleExtractor)

    class Bad:
        name = "bad"
        version = "1"

        def extract(self, text):
            return [Triple("x", "likes", "y", 0.9, 0, len(text))]

    register("bad", Bad)
    with pytest.raises(ValueError, match="likes"):
        extract_triples(CHUNKS, get_extractor("bad"))
    with pytest.raises(ValueError):
        register("Bad Name", Bad)


def test_spacy_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    with pytest.raises(RuntimeError) as info:
        get_extractor("spacy")
    assert str(info.value) == SPACY_HINT
    assert "pip install spacy" in str(info.value) and "en_core_web_sm" in str(info.value)


def test_spacy_model_missing_or_without_parser_gives_install_hint():
    spacy = pytest.importorskip("spacy")
    with pytest.raises(RuntimeError, match="en_core_web_sm"):
        get_extractor("spacy", model="no_such_model_xyz")
    with pytest.raises(RuntimeError, match="no dependency parser"):
        get_extractor("spacy", nlp=spacy.blank("en"))


# Gold dependency parses (words, heads, deps, POS, tags, lemmas), in the scheme of spaCy's English models.
GOLD_PARSES = {
    "Python was created by Guido van Rossum.": (
        ["Python", "was", "created", "by", "Guido", "van", "Rossum", "."], [2, 2, 2, 2, 6, 6, 3, 2],
        ["nsubjpass", "auxpass", "ROOT", "agent", "compound", "compound", "pobj", "punct"],
        ["PROPN", "AUX", "VERB", "ADP", "PROPN", "PROPN", "PROPN", "PUNCT"],
        ["NNP", "VBD", "VBN", "IN", "NNP", "NNP", "NNP", "."],
        ["Python", "be", "create", "by", "Guido", "van", "Rossum", "."]),
    "The json module provides a JSON encoder.": (
        ["The", "json", "module", "provides", "a", "JSON", "encoder", "."], [2, 2, 3, 3, 6, 6, 3, 3],
        ["det", "compound", "nsubj", "ROOT", "det", "compound", "dobj", "punct"],
        ["DET", "NOUN", "NOUN", "VERB", "DET", "PROPN", "NOUN", "PUNCT"],
        ["DT", "NN", "NN", "VBZ", "DT", "NNP", "NN", "."],
        ["the", "json", "module", "provide", "a", "JSON", "encoder", "."]),
    "A tuple is an immutable sequence.": (
        ["A", "tuple", "is", "an", "immutable", "sequence", "."], [1, 2, 2, 5, 5, 2, 2],
        ["det", "nsubj", "ROOT", "det", "amod", "attr", "punct"],
        ["DET", "NOUN", "AUX", "DET", "ADJ", "NOUN", "PUNCT"],
        ["DT", "NN", "VBZ", "DT", "JJ", "NN", "."],
        ["a", "tuple", "be", "an", "immutable", "sequence", "."]),
    "The parser does not raise errors.": (
        ["The", "parser", "does", "not", "raise", "errors", "."], [1, 4, 4, 4, 4, 4, 4],
        ["det", "nsubj", "aux", "neg", "ROOT", "dobj", "punct"],
        ["DET", "NOUN", "AUX", "PART", "VERB", "NOUN", "PUNCT"],
        ["DT", "NN", "VBZ", "RB", "VB", "NNS", "."],
        ["the", "parser", "do", "not", "raise", "error", "."]),
}


@pytest.fixture(scope="module")
def gold_nlp():
    """spacy.blank("en") plus a component that sets the gold parse above: the backend's own code
    runs over real spaCy Docs, without a model download."""
    spacy = pytest.importorskip("spacy")
    from spacy.language import Language
    from spacy.tokens import Doc

    name = "test_gold_parser"
    if name not in Language.factories:
        @Language.component(name, assigns=["token.dep", "token.head", "token.pos", "token.tag", "token.lemma"])
        def gold_parser(doc):
            words, heads, deps, pos, tags, lemmas = GOLD_PARSES[doc.text]
            assert [t.text for t in doc] == words, [t.text for t in doc]
            return Doc(doc.vocab, words=words, spaces=[bool(t.whitespace_) for t in doc],
                       heads=heads, deps=deps, pos=pos, tags=tags, lemmas=lemmas)

    nlp = spacy.blank("en")
    nlp.add_pipe(name)
    return nlp


def test_spacy_backend_reads_dependency_parses(gold_nlp):
    extractor = get_extractor("spacy", nlp=gold_nlp)
    text = " ".join(GOLD_PARSES)
    got = {(t.subject, t.relation, t.object): text[t.start:t.end] for t in extractor.extract(text)}
    assert got == {
        ("Python", "created_by", "Guido van Rossum"): "Python was created by Guido van Rossum.",
        ("json module", "provides", "JSON encoder"): "The json module provides a JSON encoder.",
        ("tuple", "is_a", "immutable sequence"): "A tuple is an immutable sequence.",
    }  # the negated sentence gives nothing
    df, stats = extract_triples(pl.DataFrame({"chunk_id": ["c"], "text": [text]}), extractor)
    assert stats["triples"] == 3 and df["extractor"].unique().to_list() == [f"spacy@{extractor.version}"]


def test_extractor_version_follows_the_rule_sources(tmp_path, monkeypatch):
    from ml.relation_triples import simple

    before = SimpleExtractor().version
    assert before == SimpleExtractor().version and SimpleExtractor(max_arg_words=5).version != before
    edited = []
    for src in simple.RULES_SOURCES:  # the same sources with one table entry changed
        copy = tmp_path / Path(src).name
        copy.write_text(Path(src).read_text().replace('"provide": ("provides", False, 0.65)',
                                                      '"provide": ("provides", False, 0.66)'))
        edited.append(str(copy))
    monkeypatch.setattr(simple, "RULES_SOURCES", tuple(edited))
    assert SimpleExtractor().version != before  # the per-chunk cache misses after a rule edit


def test_sample_corpus():
    from ml.sample_corpus import build_sample_corpus

    docs = [d for source in build_sample_corpus(limit=500).values() for d in source]
    chunks = pl.DataFrame({"chunk_id": [d["title"] for d in docs], "text": [d["content"] for d in docs]})
    df, stats = extract_triples(chunks, EX)
    labels = {label for label in RELATIONS if stats[f"relation.{label}"]}
    assert stats["triples"] >= 36, stats
    assert len(labels) >= 4, labels
    for row in df.iter_rows(named=True):
        assert 0.3 <= row["confidence"] <= 1.0
        ev = row["evidence"].lower()
        assert _words(row["subject"])[0].lower() in ev and _words(row["object"])[-1].lower() in ev
