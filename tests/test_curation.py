"""cleaned_chunks engine: cleaning, rules, dedup and the decision log on real text."""

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from ml.cleaned_chunks.chunking import ChunkConfig
from ml.cleaned_chunks.clean import CleanConfig, clean_frame
from ml.cleaned_chunks.filters import REASONS, FilterConfig, compute_features, first_failing_reason
from ml.cleaned_chunks.pipeline import CurationConfig, curate, read_chunks, read_clean_docs, read_decisions
from tests.helpers.curation import OTHER_PROSE, PROSE


def reason(text: str, cfg: FilterConfig = FilterConfig()) -> str | None:
    df = pl.DataFrame({"t": [text]})
    return first_failing_reason(compute_features(df, "t", cfg), cfg)[0]


def lines(*parts: str) -> str:
    return "\n".join(parts)


# a document built to break each rule, and the config under which that rule is the first to fire
BROKEN = {
    "empty_after_cleaning": ("", FilterConfig()),
    "c4_lorem_ipsum": (PROSE + " Lorem ipsum dolor sit amet, consectetur adipiscing elit.", FilterConfig()),
    "c4_curly_bracket": (PROSE + " The template was {name}.", FilterConfig(c4_curly_bracket=True)),
    "gopher_too_few_words": ("The cat sat on the mat. It was warm. Then it slept.", FilterConfig()),
    "gopher_too_many_words": (PROSE, FilterConfig(max_words=60)),
    "gopher_mean_word_length": (" ".join(f"incomprehensibilities{i} of the notwithstanding{i}." for i in range(40)),
                                FilterConfig()),
    "gopher_symbol_ratio": (PROSE + " " + " ".join(f"#tag{i}" for i in range(30)), FilterConfig()),
    "gopher_bullet_lines": (lines(*(f"- The committee reviewed part {i} of the plan with care." for i in range(12))),
                            FilterConfig()),
    "gopher_ellipsis_lines": (lines(*(f"The story of chapter {i} continues with the town and the river..." for i in range(10))),
                              FilterConfig()),
    "gopher_alpha_words": (PROSE + " " + " ".join(str(1000 + 7 * i) for i in range(60)), FilterConfig()),
    "gopher_stop_words": (" ".join(f"Apples, pears, plums{i} grow quickly near sunny hills. Farmers pick fruit daily."
                                   for i in range(8)), FilterConfig(max_dup_ngram_char_frac=None, max_top_ngram_char_frac=None)),
    "gopher_dup_lines": (lines(PROSE, *["Subscribe for more updates about the town and the river."] * 6), FilterConfig()),
    "gopher_dup_paragraphs": ("\n\n".join([PROSE, OTHER_PROSE, OTHER_PROSE, OTHER_PROSE]),
                              FilterConfig(max_dup_line_frac=None, max_dup_line_char_frac=None)),
    "gopher_dup_line_chars": (lines(PROSE, OTHER_PROSE, OTHER_PROSE),
                              FilterConfig(max_dup_line_frac=None)),
    "gopher_dup_paragraph_chars": ("\n\n".join([PROSE, OTHER_PROSE, OTHER_PROSE]),
                                   FilterConfig(max_dup_line_frac=None, max_dup_line_char_frac=None, max_dup_para_frac=None)),
    "gopher_top_ngram": (PROSE + " " + " ".join(f"data science {w}" for w in PROSE.split()[:40]), FilterConfig()),
    "gopher_dup_ngrams": (PROSE + " " + OTHER_PROSE[:150] + " " + OTHER_PROSE[:150] + " " + OTHER_PROSE[:150],
                          FilterConfig(max_top_ngram_char_frac=None)),
    "c4_too_few_sentences": (PROSE.replace(". ", ", and "), FilterConfig()),
}


def test_clean_prose_passes_every_rule():
    assert reason(PROSE) is None
    assert reason("\n\n".join([PROSE, OTHER_PROSE])) is None


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_fires_on_a_document_built_to_break_it(rule):
    text, cfg = BROKEN[rule]
    assert reason(text, cfg) == rule
    assert reason(PROSE, cfg) is None or rule == "gopher_too_many_words"


def test_every_rule_has_a_breaking_document():
    assert set(BROKEN) == set(REASONS)


def test_switching_a_rule_or_family_off():
    text, _ = BROKEN["c4_lorem_ipsum"]
    assert reason(text, FilterConfig(c4_lorem_ipsum=False)) is None
    assert reason(text, FilterConfig(c4=False)) is None
    short = BROKEN["gopher_too_few_words"][0]
    assert reason(short, FilterConfig(min_words=None, c4_min_sentences=None, gopher_repetition=False)) is None
    assert reason(short, FilterConfig(gopher_quality=False, gopher_repetition=False, c4=False)) is None


def clean(text: str, cfg: CleanConfig = CleanConfig()) -> str:
    return clean_frame(pl.DataFrame({"t": [text]}), "t", cfg)["text"][0]


def test_cleaning_normalizes_and_strips_markup():
    assert clean("ﬁne Ｗｉｄｅ text\x07 with\u200b controls") == "fine Wide text with controls"
    html = "<html><head><style>p {color: red}</style></head><body><p>Hello <b>world</b> &amp; friends&#8217;</p>" \
           "<script>var x = 1;</script><!-- a comment --><div>Second   block</div></body></html>"
    assert clean(html) == "Hello world & friends’\n\nSecond block"
    wiki = "== History ==\n'''Paris''' is the [[capital city|capital]] of [[France]].{{citation needed}}<ref>A book</ref>\n[[Category:Cities]]"
    assert clean(wiki) == "History\nParis is the capital of France."
    # code-like text keeps its comparisons and quotes (no wiki markers present)
    assert clean("if x < 0 and y > 1: s = ''") == "if x < 0 and y > 1: s = ''"


def test_line_rules_remove_boilerplate_and_are_configurable():
    text = lines("Welcome to the site.", "Please enable JavaScript to continue.", "Read our Privacy Policy.",
                 "All rights reserved 2024.", "The real article starts here and goes on.")
    assert clean(text) == "Welcome to the site.\nThe real article starts here and goes on."
    assert "JavaScript" in clean(text, CleanConfig(c4_javascript_lines=False))
    custom = CleanConfig(boilerplate_patterns=(r"^welcome",))
    assert "Welcome" not in clean(text, custom) and "All rights reserved" in clean(text, custom)
    assert clean(lines("One two.", "Three words here.", "Ok"), CleanConfig(c4_min_words_per_line=3)) == "Three words here."


def write_raw(tmp: Path, texts: list[str]) -> list[Path]:
    raw = tmp / "raw"
    raw.mkdir()
    df = pl.DataFrame({"doc_id": [f"d{i:03d}" for i in range(len(texts))], "title": "t", "url": "u",
                       "source": "s.jsonl", "content": texts})
    df.write_parquet(raw / "part-00000.parquet")
    return [raw / "part-00000.parquet"]


def test_pipeline_decisions_duplicates_and_accounting(tmp_path):
    near = PROSE.replace("narrow brick houses", "narrow stone houses")  # one word changed: J ≈ 0.9
    texts = [PROSE, OTHER_PROSE, "  " + PROSE.upper() + "  ", near, BROKEN["c4_lorem_ipsum"][0], "<p> </p>",
             "\n\n".join([OTHER_PROSE, PROSE])]
    cfg = CurationConfig(batch_docs=3, chunk=ChunkConfig(chunk_size=40, overlap=8))
    report = curate(write_raw(tmp_path, texts), tmp_path / "out", tmp_path / "tmp", cfg)
    dec = read_decisions(tmp_path / "out").collect()
    assert dec.height == len(texts) and dec["doc_id"].to_list() == [f"d{i:03d}" for i in range(len(texts))]
    rows = {r["doc_id"]: (r["decision"], r["reason"], r["duplicate_of"]) for r in dec.iter_rows(named=True)}
    assert rows["d000"] == ("kept", None, None)
    assert rows["d001"] == ("kept", None, None)
    assert rows["d002"] == ("exact_duplicate", "exact_duplicate", "d000")  # case and whitespace differ only
    assert rows["d003"] == ("near_duplicate", "near_duplicate:jaccard>=0.8", "d000")
    assert rows["d004"] == ("filtered", "c4_lorem_ipsum", None)
    assert rows["d005"] == ("filtered", "empty_after_cleaning", None)
    assert rows["d006"][0] == "kept"  # shares text with two docs but is neither copy
    # similarity: the README's Jaccard (5-word shingles of the lower-cased, whitespace-split text) by hand
    sim = dict(zip(dec["doc_id"], dec["similarity"]))
    assert sim["d003"] == pytest.approx(jaccard(PROSE, near), abs=1e-12) and 0.8 <= sim["d003"] < 1
    assert sim["d002"] == 1.0
    assert all(sim[d] is None for d in ("d000", "d001", "d004", "d005", "d006"))
    stats = report.stats()
    assert stats["docs_in"] == len(texts) == sum(stats[f"docs.{d}"] for d in ("kept", "exact_duplicate",
                                                                             "near_duplicate", "filtered"))
    assert stats["duplicate_rate"] == pytest.approx(2 / 7)
    kept_docs = read_clean_docs(tmp_path / "out").collect()
    assert kept_docs["doc_id"].to_list() == ["d000", "d001", "d006"]
    chunks = read_chunks(tmp_path / "out").collect()
    assert set(chunks["doc_id"]) == {"d000", "d001", "d006"}
    assert chunks["n_tokens"].max() <= 40
    texts_by_doc = dict(zip(kept_docs["doc_id"], kept_docs["text"]))
    for c in chunks.iter_rows(named=True):
        assert texts_by_doc[c["doc_id"]][c["char_start"]:c["char_end"]] == c["text"]


def jaccard(a: str, b: str, n: int = 5) -> float:
    def shingles(t: str) -> set:
        w = t.lower().split()
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}
    return len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))


def test_near_duplicate_similarity_reaches_the_catalog(tmp_path, home):
    """`select ... from doc_decisions where decision = 'near_duplicate'` shows how close each copy was."""
    from types import SimpleNamespace

    from assets.curation import _decision_rows
    from ml.catalog import SCHEMAS, Catalog
    from ml.cleaned_chunks.pipeline import DECISION_SCHEMA

    # the catalog table holds every column of the decisions files, with the same types
    assert {k: SCHEMAS["doc_decisions"][k] for k in DECISION_SCHEMA} == DECISION_SCHEMA
    near = PROSE.replace("narrow brick houses", "narrow stone houses")
    nearer = PROSE.replace("Today visitors", "Today tourists")
    curate(write_raw(tmp_path, [PROSE, near, OTHER_PROSE, nearer, PROSE.lower()]), tmp_path / "out", tmp_path / "tmp")
    cat = Catalog(home)
    cat.append(_decision_rows(SimpleNamespace(path=tmp_path / "out", data_version="v1")))
    got = cat.query("SELECT doc_id, duplicate_of, similarity FROM doc_decisions "
                    "WHERE decision = 'near_duplicate' ORDER BY doc_id")
    assert got["doc_id"].to_list() == ["d001", "d003"] and got["duplicate_of"].to_list() == ["d000", "d000"]
    assert got["similarity"].to_list() == pytest.approx([jaccard(PROSE, near), jaccard(PROSE, nearer)], abs=1e-12)
    exact = cat.query("SELECT similarity FROM doc_decisions WHERE decision = 'exact_duplicate'")
    assert exact["similarity"].to_list() == [1.0]


def test_same_input_same_output_bytes(tmp_path):
    parts = write_raw(tmp_path, [PROSE, OTHER_PROSE, PROSE + " Extra sentence at the end here."])
    outs = []
    for i in range(2):
        curate(parts, tmp_path / f"out{i}", tmp_path / f"tmp{i}")
        outs.append(sorted((p.relative_to(tmp_path / f"out{i}").as_posix(), p.read_bytes())
                           for p in (tmp_path / f"out{i}").rglob("*.parquet")))
    assert outs[0] == outs[1]


def test_near_dedup_can_be_switched_off(tmp_path):
    near = PROSE.replace("narrow brick houses", "narrow stone houses")
    report = curate(write_raw(tmp_path, [PROSE, near]), tmp_path / "out", tmp_path / "tmp",
                    replace(CurationConfig(), near_dedup=False))
    assert report.decisions["kept"] == 2
