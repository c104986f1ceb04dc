"""Sentence-aware text chunking with stable ids and exact character spans.

Chunks are measured in tokens of a simple regex pre-tokenizer, ``TOKEN_RE``: a run of
word characters or one punctuation mark (``"don't"`` is ``don``, ``'``, ``t``). It is not
a trained tokenizer; it only makes chunk sizes comparable and deterministic.

Sentences (``split_sentences``) are split, using a regex and a small loop:

* after ``.``, ``!`` or ``?`` (optionally followed by closing quotes/brackets) when
  whitespace follows and then a character that is not lowercase: an uppercase letter, a
  digit, an opening quote or bracket (or an uncased letter, e.g. CJK). A single ``.``
  after a common abbreviation (``e.g.``, ``i.e.``, ``etc.``, ``Mr.``, ``Dr.``, ``vs.``,
  ``Fig.``, ``No.``, ... see ``ABBREVIATIONS``) or after initials (``J.``, ``J.R.R.``)
  does not end a sentence; decimals (``3.14``) never do, as no whitespace follows the dot;
* at blank lines (paragraph breaks, ``\\n\\s*\\n``);
* at the start of a bullet / list line: a line whose first non-blank text is ``-``, ``*``,
  ``•`` or ``1.`` / ``1)`` (one to three digits) followed by whitespace.

Sentence spans are trimmed of surrounding whitespace and cover all non-space text. As
sentences are separated by whitespace, no token ever crosses a sentence boundary.

Packing (``chunk_text``) works on the document's token sequence, in which every sentence
end is a *boundary*:

* a chunk ends at the last boundary that keeps it within ``chunk_size`` tokens (greedy
  whole sentences); when no boundary past the previous chunk's end fits (a sentence longer
  than ``chunk_size``), it ends exactly ``chunk_size`` tokens after its start, at a token
  boundary;
* the next chunk starts ``overlap`` tokens or fewer before the previous chunk's end: at the
  earliest sentence boundary within that budget (the largest sentence-aligned overlap), else
  exactly ``overlap`` tokens back. The start never reaches back to the previous chunk's
  start (progress), and it is moved later if that lets the next sentence fit whole in the
  next chunk (so a fitting sentence is never cut just to make room for the overlap), as
  long as some overlap remains. With ``overlap=0`` chunks tile the tokens exactly once;
* a trailing chunk with fewer than ``min_chunk_tokens`` tokens is merged into the previous
  one when the merged chunk fits in ``chunk_size`` tokens, else kept. (With the greedy
  packing above that merge cannot actually fit: had it fit, the previous chunk would already
  have reached the end. The rule is kept as a guard, and a short tail is therefore kept.)

Each chunk's ``text`` is exactly ``doc_text[char_start:char_end]``, from the start of its
first token to the end of its last (no surrounding whitespace), and its ``chunk_id`` is the
first 20 hex digits of ``sha256(f"{doc_id}\\x1f{char_start}\\x1f{char_end}\\x1f{text}")``.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import polars as pl

TOKEN_RE = re.compile(r"\w+|[^\w\s]")

CHUNK_SCHEMA = {
    "chunk_id": pl.String, "doc_id": pl.String, "chunk_index": pl.Int64, "char_start": pl.Int64,
    "char_end": pl.Int64, "n_tokens": pl.Int64, "text": pl.String,
}

# Lowercased, without the final dot. Internal dots are kept ("e.g").
ABBREVIATIONS = frozenset({
    "e.g", "i.e", "etc", "cf", "vs", "v", "viz", "al", "ca", "approx", "resp",
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "rev", "gen", "gov", "sen", "rep",
    "capt", "col", "lt", "sgt", "hon",
    "fig", "figs", "no", "nos", "vol", "vols", "pp", "p", "ch", "sec", "eq", "eqs", "ed", "eds",
    "dept", "inc", "ltd", "co", "corp", "est", "op",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})

# Candidate split points; the loop in _split_points decides. Every branch starts with one of
# [.!?\n], so the regex engine skips ahead with a fast character-set scan:
#   [.!?] - sentence-final punctuation (+ closing quotes/brackets), whitespace, then a
#           letter/digit/opening quote/bracket (case and abbreviations are checked in the loop)
#   \n    - a blank line (the whitespace after it is consumed), or a newline + indentation
#           before a bullet / list marker followed by whitespace
_BOUNDARY_RE = re.compile(
    r"[.!?\n]"
    r"(?:(?<=[.!?])(?P<more>[.!?]*)[\"'”’»)\]}]*\s+(?=[^\W_]|[\"'“‘«(\[{])"
    r"|(?<=\n)(?:[^\S\n]*\n\s*|[^\S\n]*(?=(?:[-*•]|\d{1,3}[.)])\s)))"
)
_INITIALS_RE = re.compile(r"[A-Z](?:\.[A-Z])*")  # "J", "J.R.R" (the final dot is the candidate)

# Token counting without the regex: every character gets a class byte -- b"a" word (\w),
# b" " whitespace (\s), b"." anything else (a one-character punctuation token) -- and a
# sentence's token count is (# of ".") + (# of word runs). ASCII goes through bytes.translate;
# the (rare) non-ASCII characters, "?" after encode("ascii", "replace"), are patched one by one.
_WORD, _SPACE, _PUNCT = 97, 32, 46
_ASCII_CLASS = bytes(
    _WORD if (chr(b).isalnum() or b == 95) else _SPACE if chr(b).isspace() else _PUNCT for b in range(128)
) + bytes([_PUNCT]) * 128
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")


class _NonAsciiClass(dict):
    """ord -> class character for str.translate, filled on demand (same rules as re's \\w, \\s)."""

    def __missing__(self, o: int) -> str:
        c = chr(o)
        v = self[o] = "a" if (c.isalnum() or c == "_") else " " if c.isspace() else "."
        return v


_NON_ASCII_CLASS = _NonAsciiClass()


def _char_classes(text: str) -> bytearray:
    cls = bytearray(text.encode("ascii", "replace").translate(_ASCII_CLASS))
    if not text.isascii():
        for m in _NON_ASCII_RE.finditer(text):
            cls[m.start():m.end()] = m.group().translate(_NON_ASCII_CLASS).encode("ascii")
    return cls


@dataclass(frozen=True)
class ChunkConfig:
    chunk_size: int = 256      # max pre-tokens per chunk
    overlap: int = 32          # pre-tokens shared by consecutive chunks of a doc
    min_chunk_tokens: int = 8  # a shorter trailing chunk is merged into the previous one if it fits

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 0 <= self.overlap < self.chunk_size:
            raise ValueError(f"overlap must be in [0, chunk_size), got {self.overlap} (chunk_size {self.chunk_size})")
        if self.min_chunk_tokens < 0:
            raise ValueError(f"min_chunk_tokens must be >= 0, got {self.min_chunk_tokens}")


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the word ending at ``text[dot]`` (a ``.``) is an abbreviation or initials."""
    j = dot
    lim = max(0, dot - 16)
    while j > lim and (text[j - 1].isalnum() or text[j - 1] == "."):
        j -= 1
    word = text[j:dot]
    if not word:
        return False
    if word.lower() in ABBREVIATIONS:
        return True
    return _INITIALS_RE.fullmatch(word) is not None


def _split_points(text: str) -> list[int]:
    """Positions (of a non-space character) where a new sentence starts, increasing."""
    points: list[int] = []
    n = len(text)
    for m in _BOUNDARY_RE.finditer(text):
        pos = m.end()
        if pos >= n:
            continue
        start = m.start()
        ch = text[start]
        if ch != "\n":
            if text[pos].islower():
                continue
            if ch == "." and not m.group("more") and _is_abbreviation(text, start):
                continue
        if not points or pos > points[-1]:
            points.append(pos)
    return points


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    n = len(text)
    first = n - len(text.lstrip())
    if first == n:
        return []
    spans = []
    starts = [first] + [p for p in _split_points(text) if p > first]
    starts.append(n)
    for a, b in zip(starts, starts[1:]):
        e = b
        while e > a and text[e - 1].isspace():
            e -= 1
        if e > a:
            spans.append((a, e))
    return spans


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the sentences of ``text``, in order.

    Spans carry no surrounding whitespace and together cover all non-space text.
    """
    return _sentence_spans(text)


def _chunk_id(doc_id: str, start: int, end: int, text: str) -> str:
    return hashlib.sha256(f"{doc_id}\x1f{start}\x1f{end}\x1f{text}".encode("utf-8")).hexdigest()[:20]


def _chunk_spans(text: str, cfg: ChunkConfig) -> list[tuple[int, int, int]]:
    """(char_start, char_end, n_tokens) of each chunk of ``text``."""
    sents = _sentence_spans(text)
    if not sents:
        return []
    cls = _char_classes(text)
    count = cls.count
    cum = [0]  # cum[i]: token index where sentence i starts; cum[-1]: total tokens
    total = 0
    for a, e in sents:  # a sentence starts with a token: + 1 if that is a word
        total += count(b".", a, e) + count(b" a", a, e) + count(b".a", a, e) + (cls[a] == _WORD)
        cum.append(total)

    size, overlap = cfg.chunk_size, cfg.overlap
    tok_cache: dict[int, list[tuple[int, int]]] = {}

    def tokens_of(i: int) -> list[tuple[int, int]]:
        spans = tok_cache.get(i)
        if spans is None:
            a, e = sents[i]
            spans = tok_cache[i] = [m.span() for m in TOKEN_RE.finditer(text, a, e)]
        return spans

    def char_start(t: int) -> int:
        i = bisect_right(cum, t) - 1
        return sents[i][0] if cum[i] == t else tokens_of(i)[t - cum[i]][0]

    def char_end(t: int) -> int:  # end of the token before token index t
        i = bisect_left(cum, t)
        if cum[i] == t:
            return sents[i - 1][1]
        i -= 1
        return tokens_of(i)[t - 1 - cum[i]][1]

    chunks: list[tuple[int, int]] = []  # token ranges [ts, te)
    ts, prev_te = 0, 0
    while True:
        hi = ts + size
        j = bisect_right(cum, hi) - 1
        te = cum[j] if cum[j] > prev_te else min(hi, total)
        chunks.append((ts, te))
        if te >= total:
            break
        nxt = te
        if overlap:
            lo = max(ts + 1, te - overlap)
            # end of the sentence holding token te: let it fit whole in the next chunk if possible
            fit = cum[bisect_right(cum, te)] - size
            if lo < fit < te:
                lo = fit
            if lo < te:
                k = bisect_left(cum, lo)
                nxt = cum[k] if cum[k] < te else lo
        ts, prev_te = nxt, te

    if len(chunks) > 1:
        ts, te = chunks[-1]
        pts = chunks[-2][0]
        if te - ts < cfg.min_chunk_tokens and te - pts <= size:
            chunks[-2:] = [(pts, te)]

    return [(char_start(ts), char_end(te), te - ts) for ts, te in chunks]


def chunk_text(doc_id: str, text: str, cfg: ChunkConfig) -> list[dict]:
    """Chunks of one document: dicts with chunk_id, doc_id, chunk_index, char_start,
    char_end, n_tokens and text (``text == doc_text[char_start:char_end]``)."""
    out = []
    for k, (a, e, n) in enumerate(_chunk_spans(text, cfg)):
        piece = text[a:e]
        out.append({
            "chunk_id": _chunk_id(doc_id, a, e, piece), "doc_id": doc_id, "chunk_index": k,
            "char_start": a, "char_end": e, "n_tokens": n, "text": piece,
        })
    return out


def chunk_frame(docs: pl.DataFrame, cfg: ChunkConfig) -> pl.DataFrame:
    """Chunk every row of ``docs`` (columns ``doc_id``, ``text``) into a ``CHUNK_SCHEMA``
    frame: documents in input order, each document's chunks in order. Null or blank text
    gives no chunks."""
    cols: dict[str, list] = {name: [] for name in CHUNK_SCHEMA}
    ids, idx, starts, ends, ntoks, texts, docids = (
        cols["chunk_id"], cols["chunk_index"], cols["char_start"], cols["char_end"],
        cols["n_tokens"], cols["text"], cols["doc_id"],
    )
    for doc_id, text in zip(docs["doc_id"].to_list(), docs["text"].to_list()):
        if not text:
            continue
        for k, (a, e, n) in enumerate(_chunk_spans(text, cfg)):
            piece = text[a:e]
            ids.append(_chunk_id(doc_id, a, e, piece))
            docids.append(doc_id)
            idx.append(k)
            starts.append(a)
            ends.append(e)
            ntoks.append(n)
            texts.append(piece)
    return pl.DataFrame(cols, schema=CHUNK_SCHEMA)
