"""Sentence-aware chunking: sizes, overlap, coverage, sentence alignment, spans, ids, frames.

Run as a script (``python -m tests.test_chunking [MB]``) to print chunk_text throughput on
generated English prose.
"""

import hashlib
import random

import polars as pl
import pytest

from ml.cleaned_chunks.chunking import (
    CHUNK_SCHEMA, TOKEN_RE, ChunkConfig, _merge_short_tail, chunk_frame, chunk_text, split_sentences,
)

# Real English sentences (an encyclopedic article about a market town), with the usual
# traps: abbreviations, initials, decimals, curly quotes, a question, non-ASCII characters.
SENTENCES = [
    "The river rises in the hills north of the town and flows south for about 120 kilometres before it reaches the sea.",
    "Its valley was settled early, and the remains of several Roman villas have been found along the lower course.",
    "In the Middle Ages the town grew rich on the wool trade, which brought merchants from Flanders and northern Italy.",
    "The parish church, begun in 1240, is one of the largest in the county; its tower can be seen for miles.",
    "Dr. Margaret Hale, who surveyed the building in 1962, argued that the nave was rebuilt after a fire.",
    "Later excavations (e.g. those of 1978 and 1985) found little evidence of such a fire.",
    "A railway reached the town in 1849, and within twenty years the population had almost doubled.",
    "Most of the new houses were built in brick, with slate roofs brought by rail from Wales.",
    "“It was a place of chimneys and noise,” one visitor wrote, “but also of great energy.”",
    "The mill closed in 1931, during the depression, and the site stood empty until the war.",
    "Today the economy depends on tourism, light industry, and a small but growing number of technology firms.",
    "The average temperature in July is 17.5 °C, and rainfall is spread fairly evenly through the year.",
    "Mr. J. Thompson, the first mayor, is commemorated by a statue in the market square.",
    "Why did the town decline so quickly after 1950?",
    "Historians have offered several explanations, none of them entirely convincing.",
    "Some point to the closure of the branch line; others blame the loss of the cattle market to a larger rival.",
    "The local football club was founded in 1887 and has played at the same ground since 1903.",
    "Its most successful season came in 1974, when it reached the fourth round of the national cup.",
    "The school, which occupies a Georgian house on the edge of the common, has about 900 pupils.",
    "Among its former pupils are a bishop, two members of parliament, and the novelist Anne Carver.",
    "Carver’s best-known book describes a childhood spent between the town and her grandmother’s farm.",
    "The farm itself still stands, though its fields are now part of a nature reserve managed by a charity.",
    "Otters returned to the river in the 1990s after an absence of almost forty years.",
    "Kingfishers, herons and several species of dragonfly can be seen from the footpath below the weir.",
    "The footpath follows the route of an old towpath, since the river was navigable as far as the town until 1820.",
    "Barges carried coal upstream and returned with grain, timber and, occasionally, passengers.",
    "A short stretch of the canal cut was restored by volunteers in 2004, and boat trips run in summer.",
    "The annual fair, held on the first Saturday of September, attracts visitors from across the region.",
    "It began as a hiring fair, at which farm workers offered themselves for employment for the coming year.",
    "By the late nineteenth century it had become mainly a pleasure fair, with stalls, music and rides.",
    "The town council has twelve members, elected every four years, and meets in the old corn exchange.",
    "Plans to convert the exchange into a library were approved in 2019 but have been delayed by rising costs.",
    "The nearest hospital is in the city, about 30 km away; a small clinic in the town offers basic care.",
    "Bus services run hourly on weekdays, less often at weekends, and there is no longer a Sunday service.",
    "Critics argue that poor transport links have made it harder to attract young families — and employers.",
    "Supporters of the new bypass say it will relieve congestion, vs. opponents who fear for the water meadows.",
    "An inquiry into the scheme is expected to report next year.",
    "Whatever its outcome, the debate has shown how strongly residents feel about the landscape around them.",
]

# One sentence of about 300 tokens: clauses joined by commas and semicolons, no sentence end inside.
LONG_SENTENCE = (
    "The survey of 1962, which was carried out over three wet summers by a team of volunteers "
    "from the county archaeological society, recorded every surviving timber in the roof of the "
    "nave, measured the thickness of the walls at more than forty points, traced the outline of "
    "the earlier chancel beneath the floor, photographed the carved bosses in the aisles, the "
    "painted screen, the bench ends and the fragments of medieval glass that had been gathered "
    "into the east window after the storm of 1703, noted the marks left by masons on the stones "
    "of the tower arch, compared them with those on the bridge and on the ruined chapel by the "
    "ford, collected the accounts of the churchwardens from the record office, the diocesan "
    "registry and a private library in the north of the county, transcribed the inscriptions on "
    "the brasses and on the tombs in the churchyard, some of them already worn almost smooth by "
    "the weather, and drew up a plan of the building at a scale of one inch to eight feet, on "
    "which each phase of construction was shown in a different colour, from the Norman doorway "
    "of the north aisle to the vestry added in the reign of Queen Victoria; it remains, after "
    "sixty years, the most complete record of the church that anyone has made, and later "
    "writers, whether they agreed with its conclusions about the fire or not, have all relied "
    "on its drawings, its measurements and its careful, patient lists, which fill four "
    "volumes in the library of the society and are still consulted by students every year."
)


def ntok(text: str) -> int:
    return len(TOKEN_RE.findall(text))


def token_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in TOKEN_RE.finditer(text)]


def make_prose(n_chars: int, seed: int = 0) -> str:
    """Paragraphs of real English sentences in random order, about n_chars characters."""
    rng = random.Random(seed)
    paras, size = [], 0
    while size < n_chars:
        p = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(2, 9)))
        paras.append(p)
        size += len(p) + 2
    return "\n\n".join(paras)


def make_doc() -> str:
    """Prose paragraphs, a bullet list, a long sentence and more prose."""
    bullets = (
        "The society lists its aims:\n- to record the buildings of the county;\n"
        "- to publish its surveys;\n- to train volunteers."
    )
    return "\n\n".join([make_prose(3000, seed=1), bullets, LONG_SENTENCE, make_prose(2000, seed=2)])


def token_ranges(doc: str, chunks: list[dict]) -> list[tuple[int, int]]:
    """Each chunk as a range [ts, te) of token indices of the document."""
    spans = token_spans(doc)
    start_of = {s: i for i, (s, _) in enumerate(spans)}
    end_of = {e: i + 1 for i, (_, e) in enumerate(spans)}
    return [(start_of[c["char_start"]], end_of[c["char_end"]]) for c in chunks]


def check_chunks(doc: str, chunks: list[dict], cfg: ChunkConfig) -> list[tuple[int, int]]:
    """Invariants every chunking must satisfy; returns the chunks' token ranges."""
    assert chunks, "a non-blank document gives chunks"
    for k, c in enumerate(chunks):
        assert c["chunk_index"] == k
        assert c["text"] == doc[c["char_start"]:c["char_end"]]
        assert c["text"] == c["text"].strip()
        assert c["n_tokens"] == ntok(c["text"])
        assert 1 <= c["n_tokens"] <= cfg.chunk_size
    ranges = token_ranges(doc, chunks)  # KeyError here: a chunk edge is not a token edge
    n = len(token_spans(doc))
    assert ranges[0][0] == 0 and ranges[-1][1] == n, "first and last token are covered"
    for (ps, pe), (s, e) in zip(ranges, ranges[1:]):
        assert ps < s and pe < e, "progress"
        shared = pe - s
        assert shared <= cfg.overlap
        if cfg.overlap:  # (a 1-token chunk cannot share a token without repeating its start)
            assert shared > 0 or pe - ps == 1, "consecutive chunks overlap"
        else:
            assert shared == 0, "no shared tokens, no gap"
    # nothing lost: every token is inside some chunk
    covered = [0] * n
    for s, e in ranges:
        for t in range(s, e):
            covered[t] += 1
    assert min(covered) >= 1
    if cfg.overlap == 0:
        assert covered == [1] * n
    return ranges


# ---------------------------------------------------------------------------- packing


@pytest.mark.parametrize("size,overlap", [(256, 32), (64, 16), (64, 0), (32, 8), (20, 19), (5, 1), (1, 0)])
def test_sizes_overlap_and_coverage(size, overlap):
    doc = make_doc()
    cfg = ChunkConfig(chunk_size=size, overlap=overlap)
    chunks = chunk_text("doc-1", doc, cfg)
    check_chunks(doc, chunks, cfg)
    assert len(chunks) > 1
    assert {c["doc_id"] for c in chunks} == {"doc-1"}


def test_overlap_zero_tiles_every_token_exactly_once():
    doc = make_prose(20000, seed=7)
    cfg = ChunkConfig(chunk_size=48, overlap=0)
    chunks = chunk_text("d", doc, cfg)
    ranges = check_chunks(doc, chunks, cfg)
    assert sum(e - s for s, e in ranges) == len(token_spans(doc))
    assert sum(c["n_tokens"] for c in chunks) == len(token_spans(doc))


def test_a_short_document_is_one_chunk_of_all_its_text():
    doc = "  \n" + SENTENCES[0] + " " + SENTENCES[1] + "\n\n  "
    [c] = chunk_text("d", doc, ChunkConfig())
    assert c["text"] == doc.strip()
    assert (c["char_start"], c["char_end"]) == (3, len(doc) - 4)
    assert c["n_tokens"] == ntok(doc)


def test_chunks_start_and_end_on_sentence_boundaries():
    short = [s for s in SENTENCES if 15 <= ntok(s) <= 24]
    assert len(short) >= 15
    rng = random.Random(3)
    sents = [rng.choice(short) for _ in range(200)]
    doc = " ".join(sents)
    spans = split_sentences(doc)
    assert [doc[a:b] for a, b in spans] == sents  # the splitter finds exactly these sentences
    starts, ends = {a for a, _ in spans}, {b for _, b in spans}
    for overlap in (0, 24):
        cfg = ChunkConfig(chunk_size=64, overlap=overlap)
        chunks = chunk_text("d", doc, cfg)
        check_chunks(doc, chunks, cfg)
        assert len(chunks) > 50
        for c in chunks:
            assert c["char_start"] in starts and c["char_end"] in ends, c["text"]
        for c in chunks[:-1]:
            assert c["n_tokens"] > 64 - 24, "greedy: a chunk stops only when the next sentence does not fit"
        if overlap:  # the overlap is the last whole sentence of the previous chunk
            for prev, c in zip(chunks, chunks[1:]):
                last = max(a for a in starts if a < prev["char_end"])
                assert c["char_start"] == last


def test_overlap_falls_back_to_exact_token_count_inside_long_sentences():
    long_ = [s for s in SENTENCES if ntok(s) >= 21]
    doc = " ".join(long_ * 4)
    cfg = ChunkConfig(chunk_size=64, overlap=8)  # no sentence is short enough to be the overlap
    chunks = chunk_text("d", doc, cfg)
    ranges = check_chunks(doc, chunks, cfg)
    starts = {a for a, _ in split_sentences(doc)}
    for (_, pe), (s, _), c in zip(ranges, ranges[1:], chunks[1:]):
        assert pe - s == 8
        assert c["char_start"] not in starts


def test_overlap_prefers_the_largest_sentence_aligned_overlap_within_budget():
    a, b, c = "Rain fell all day.", "The roads flooded.", "Nobody went to the market in the square that week."
    doc = " ".join([a, b, c, a])
    # tokens: a=5, b=4, c=11; chunk 1 = a + b (9 <= 12); overlap budget 10 -> starts at b
    chunks = chunk_text("d", doc, ChunkConfig(chunk_size=16, overlap=10))
    # chunk 2 = b + c; c (11 tokens) exceeds the budget, so chunk 3 starts 10 tokens back
    assert [ch["text"] for ch in chunks] == [f"{a} {b}", f"{b} {c}", f"{c.split(' ', 1)[1]} {a}"]
    # budget 4 only fits b (4 tokens) exactly
    chunks = chunk_text("d", doc, ChunkConfig(chunk_size=16, overlap=4))
    assert [ch["text"] for ch in chunks][:2] == [f"{a} {b}", f"{b} {c}"]
    # budget 3: no sentence fits, so exactly 3 tokens back ("roads", "flooded", ".")
    chunks = chunk_text("d", doc, ChunkConfig(chunk_size=16, overlap=3))
    assert chunks[1]["text"] == "roads flooded. " + c
    assert chunks[1]["n_tokens"] == 3 + ntok(c)


def test_overlap_gives_way_so_a_fitting_sentence_is_not_cut():
    # chunk 1 = s1 + s2 (the long s3 does not fit); overlapping all of s2 would leave no room
    # for s3, so the next chunk starts inside s2 just far enough back for s3 to fit whole.
    s1 = " ".join(["Word"] * 11) + "."   # 12 tokens
    s2 = "Short one here."                # 4 tokens
    s3 = " ".join(["Long"] * 13) + "."   # 14 tokens
    doc = " ".join([s1, s2, s3])
    chunks = chunk_text("d", doc, ChunkConfig(chunk_size=16, overlap=6, min_chunk_tokens=0))
    assert [c["text"] for c in chunks] == [f"{s1} {s2}", "here. " + s3]
    assert chunks[1]["n_tokens"] == 16


def test_a_sentence_longer_than_chunk_size_is_split_into_pieces():
    n = ntok(LONG_SENTENCE)
    assert n > 250 and split_sentences(LONG_SENTENCE) == [(0, len(LONG_SENTENCE))]
    cfg = ChunkConfig(chunk_size=64, overlap=0)
    chunks = chunk_text("d", LONG_SENTENCE, cfg)
    check_chunks(LONG_SENTENCE, chunks, cfg)
    assert [c["n_tokens"] for c in chunks] == [64] * (n // 64) + ([n % 64] if n % 64 else [])
    cfg = ChunkConfig(chunk_size=64, overlap=10)
    ranges = check_chunks(LONG_SENTENCE, chunk_text("d", LONG_SENTENCE, cfg), cfg)
    assert all(pe - s == 10 for (_, pe), (s, _) in zip(ranges, ranges[1:]))
    assert all(e - s == 64 for s, e in ranges[:-1])


def test_a_chunk_before_a_long_sentence_is_filled_up():
    short = "The survey began in 1962."  # 6 tokens, then a sentence that must be cut anyway
    doc = f"{short} {LONG_SENTENCE} {SENTENCES[0]}"
    cfg = ChunkConfig(chunk_size=64, overlap=0)
    chunks = chunk_text("d", doc, cfg)
    check_chunks(doc, chunks, cfg)
    assert chunks[0]["n_tokens"] == 64 and chunks[0]["text"].startswith(short + " The survey of 1962")
    assert chunks[-1]["text"].endswith(SENTENCES[0])
    # a following sentence that fits on its own is not cut
    assert any(SENTENCES[0] in c["text"] for c in chunks)


def test_min_chunk_tokens():
    # A short tail that cannot be merged (it would overflow chunk_size) is kept.
    doc = " ".join(["Spam"] * 67) + "."  # 68 tokens in one sentence
    chunks = chunk_text("d", doc, ChunkConfig(chunk_size=64, overlap=0, min_chunk_tokens=8))
    assert [c["n_tokens"] for c in chunks] == [64, 4]
    assert chunks[1]["text"] == "Spam Spam Spam."
    # Greedy packing never leaves a tail that fits into the previous chunk, so the setting
    # changes nothing on real text ...
    doc = make_doc()
    for size, overlap in [(64, 16), (32, 0)]:
        base = chunk_text("d", doc, ChunkConfig(chunk_size=size, overlap=overlap, min_chunk_tokens=0))
        assert chunk_text("d", doc, ChunkConfig(chunk_size=size, overlap=overlap, min_chunk_tokens=50)) == base
    # ... and the merge rule itself: merge a short tail when the merged range fits, else keep it.
    cfg = ChunkConfig(chunk_size=64, overlap=8, min_chunk_tokens=8)
    ranges = [(0, 50), (42, 57)]
    _merge_short_tail(ranges, cfg)
    assert ranges == [(0, 50), (42, 57)]  # tail of 15 tokens is long enough
    ranges = [(0, 40), (0, 30), (55, 60)]
    _merge_short_tail(ranges, cfg)
    assert ranges == [(0, 40), (0, 60)]  # 5-token tail, merged range of 60 fits
    ranges = [(0, 60), (52, 110), (104, 110)]
    _merge_short_tail(ranges, cfg)
    assert ranges == [(0, 60), (52, 110)]  # an overlapping 6-token tail: merged (52, 110) fits
    ranges = [(0, 64), (64, 66)]
    _merge_short_tail(ranges, cfg)
    assert ranges == [(0, 64), (64, 66)]  # merged range of 66 would not fit


def test_empty_and_whitespace_text_give_no_chunks():
    for text in ["", " ", "\n\n\t  \n"]:
        assert chunk_text("d", text, ChunkConfig()) == []
        assert split_sentences(text) == []


def test_config_is_validated():
    for kw in [dict(chunk_size=0, overlap=0), dict(chunk_size=16, overlap=16), dict(overlap=-1)]:
        with pytest.raises(ValueError):
            ChunkConfig(**kw)


# ---------------------------------------------------------------------- sentences


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


def test_abbreviations_decimals_and_initials_do_not_end_sentences():
    text = (
        "Dr. Hale met Mr. J. Thompson at No. 4 Bridge St. in March. "
        "The nave is 31.5 m long, i.e. longer than the choir, vs. 20.25 m for the aisles. "
        "Several finds (e.g. coins, pottery, etc.) are shown in Fig. 3 of the report. "
        "J.R.R. Tolkien visited in 1932. Prof. Davies disagreed. It cost 3.14 pounds! "
        "Was it worth it? \"Certainly,\" said the vicar. (Nobody asked him.) Then it rained."
    )
    assert sentences(text) == [
        "Dr. Hale met Mr. J. Thompson at No. 4 Bridge St. in March.",
        "The nave is 31.5 m long, i.e. longer than the choir, vs. 20.25 m for the aisles.",
        "Several finds (e.g. coins, pottery, etc.) are shown in Fig. 3 of the report.",
        "J.R.R. Tolkien visited in 1932.",
        "Prof. Davies disagreed.",
        "It cost 3.14 pounds!",
        "Was it worth it?",
        "\"Certainly,\" said the vicar.",
        "(Nobody asked him.)",
        "Then it rained.",
    ]


def test_no_split_before_lowercase_or_without_whitespace():
    text = "The value was 2.5 in v1.2 of the file. and it was not changed.Then nothing."
    assert sentences(text) == [text]


def test_closing_quotes_stay_with_their_sentence():
    text = "“It was a place of noise.” One visitor wrote that. ‘Quite so.’ Another agreed!” "
    assert sentences(text) == [
        "“It was a place of noise.”", "One visitor wrote that.", "‘Quite so.’", "Another agreed!”",
    ]


def test_paragraphs_and_bullets_split():
    text = (
        "The society has three aims\n"
        "- to record the buildings of the county\n"
        "  * to publish its surveys\n"
        "• to train volunteers\n"
        "Its rules are simple\n"
        "1. members pay a fee\n"
        "2) members attend meetings\n"
        "\n"
        "a new paragraph starts here\n"
        "and continues on this line\n"
        "   \n"
        "über alles. über den Fluss.\n\nüber die Brücke"
    )
    assert sentences(text) == [
        "The society has three aims",
        "- to record the buildings of the county",
        "* to publish its surveys",
        "• to train volunteers\nIts rules are simple",
        "1. members pay a fee",
        "2) members attend meetings",
        "a new paragraph starts here\nand continues on this line",
        "über alles. über den Fluss.",
        "über die Brücke",
    ]
    # a hyphenated or numbered word inside a line is not a bullet
    assert sentences("A well-known 2. place - or not") == ["A well-known 2. place - or not"]
    assert sentences("The year\n1984 was cold") == ["The year\n1984 was cold"]


def test_sentence_spans_cover_all_non_space_text():
    rng = random.Random(11)
    alphabet = list("ab Z9 .!?\n\n\"')(-*•é’“ü_\t") + ["Dr. ", "e.g. ", "3.1", "\n\n", "\n- ", "\n2. "]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        spans = split_sentences(text)
        pos = 0
        for a, b in spans:
            assert pos <= a < b
            assert text[pos:a].strip() == ""
            assert not text[a].isspace() and not text[b - 1].isspace()
            pos = b
        assert text[pos:].strip() == ""


# ------------------------------------------------------------- tokens, spans and ids


def test_token_counts_match_the_regex_on_non_ascii_text():
    texts = [
        "Café “Zoë” — naïve? Yes! 東京は大きい。 Ünïcödé_words ½ ² \u00a0nbsp\u2003em e\u0301 🙂🙂 a?b",
        "Москва — столица России. Её население около 13 миллионов человек. " * 20,  # mostly non-ASCII
        make_prose(3000, seed=5).replace(" the ", " thé ").replace("a", "ä", 40),
    ]
    rng = random.Random(2)
    alphabet = list("ab_ 1\t\n?!.,'é’ß東\u00a0\u2028\u0301🙂½")
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(200)]
    for text in texts:
        for cfg in [ChunkConfig(chunk_size=7, overlap=2), ChunkConfig(chunk_size=3, overlap=0)]:
            chunks = chunk_text("d", text, cfg)
            if not text.strip():
                assert chunks == []
                continue
            check_chunks(text, chunks, cfg)
    # a lone surrogate (never past raw_docs, which quarantines them) does not break the ids
    [c] = chunk_text("d", "A broken \ud800 character.", ChunkConfig())
    assert c["n_tokens"] == 5 and len(c["chunk_id"]) == 20  # the surrogate is a punctuation token


def test_chunk_ids_are_stable_unique_and_as_specified():
    doc = make_doc()
    cfg = ChunkConfig(chunk_size=64, overlap=16)
    a, b = chunk_text("doc-1", doc, cfg), chunk_text("doc-1", doc, cfg)
    assert a == b
    ids = [c["chunk_id"] for c in a]
    assert len(set(ids)) == len(ids)
    for c in a:
        raw = f"doc-1\x1f{c['char_start']}\x1f{c['char_end']}\x1f{c['text']}"
        assert c["chunk_id"] == hashlib.sha256(raw.encode("utf-8")).hexdigest()[:20]
    other = chunk_text("doc-2", doc, cfg)
    assert [c["text"] for c in other] == [c["text"] for c in a]
    assert not set(ids) & {c["chunk_id"] for c in other}
    # the same sentence at another place of the same document gets another id
    s = SENTENCES[0]
    x, y = chunk_text("d", f"{s} {s}", ChunkConfig(chunk_size=25, overlap=0))
    assert x["text"] == y["text"] and x["chunk_id"] != y["chunk_id"]


def test_chunk_frame_schema_and_order():
    docs = pl.DataFrame({
        "doc_id": ["zeta", "alpha", "empty", "mid"],
        "text": [make_prose(4000, seed=1), SENTENCES[3], " \n ", make_prose(2500, seed=2)],
    })
    cfg = ChunkConfig(chunk_size=64, overlap=16)
    out = chunk_frame(docs, cfg)
    assert out.schema == pl.Schema(CHUNK_SCHEMA)
    expected = [c for d, t in docs.iter_rows() for c in chunk_text(d, t, cfg)]
    assert out.to_dicts() == expected
    assert out["doc_id"].unique(maintain_order=True).to_list() == ["zeta", "alpha", "mid"]
    for _, g in out.group_by("doc_id", maintain_order=True):
        assert g["chunk_index"].to_list() == list(range(g.height))
    assert out["chunk_id"].n_unique() == out.height
    no_docs = pl.DataFrame({"doc_id": [], "text": []}, schema={"doc_id": pl.String, "text": pl.String})
    empty = chunk_frame(no_docs, cfg)
    assert empty.height == 0 and empty.schema == pl.Schema(CHUNK_SCHEMA)
