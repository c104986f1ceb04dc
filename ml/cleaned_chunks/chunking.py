"""Sentence-aware text chunking with stable ids and exact character spans.

Chunks pack whole sentences up to ``chunk_size`` tokens of a regex pre-tokenizer (``TOKEN_RE``), so no
token crosses a sentence boundary; a chunk's ``text`` is exactly ``doc_text[char_start:char_end]`` and
its ``chunk_id`` a digest of (doc_id, span, text). Sentence rules, packing, overlap and speed:
DESIGN.md, "Module notes".
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


def _boundary_re() -> re.Pattern:
    # A "." right after an abbreviation or an initial (a single capital letter starting a
    # word: "J.", the last "R." of "J.R.R.") ends no sentence: one negative lookbehind per
    # word length, as lookbehinds must have a fixed width.
    by_len: dict[int, list[str]] = {}
    for w in sorted(ABBREVIATIONS):
        by_len.setdefault(len(w), []).append(re.escape(w))
    not_abbrev = "".join(
        rf"(?<!\b(?i:{'|'.join(ws)})\.)" for _, ws in sorted(by_len.items())
    )
    return re.compile(
        # every branch starts with one of [.!?\n], so the engine skips ahead with a fast
        # character-set scan
        r"[.!?\n]"
        # sentence-final punctuation (+ closing quotes/brackets), whitespace, then an uppercase
        # ASCII letter, a digit, an opening quote or bracket, or any non-ASCII character
        # (_sentence_spans checks those: not lowercase, a letter/digit or an opening quote)
        r"(?:(?<=[.!?])(?<!\b[A-Z]\.)" + not_abbrev + r"[.!?]*[\"'”’»)\]}]*\s+"
        r"(?=[A-Z0-9\"'(\[{]|[^\x00-\x7f])"
        # a blank line (+ the whitespace after it)
        r"|(?<=\n)[^\S\n]*\n\s*"
        # a newline + indentation before a bullet / list marker that whitespace follows
        r"|(?<=\n)[^\S\n]*(?=(?:[-*•]|\d{1,3}[.)])\s))"
    )


_BOUNDARY_RE = _boundary_re()
_NEWLINE_BREAK_RE = re.compile(r"\n[^\S\n]*\n|\n[^\S\n]*(?:[-*•]|\d{1,3}[.)])\s")
_OPENERS = "\"'“‘«([{"

# Token counting without a regex pass: every character gets a class byte -- b"a" word (\w),
# b" " whitespace (\s), b"." anything else (a one-character punctuation token) -- and a
# sentence's token count is (# of ".") + (# of word runs), a few bytearray.count calls.
# ASCII goes through bytes.translate (hundreds of MB/s). Real "?" are first replaced by "!"
# (same class), so the "?" that encode("ascii", "replace") leaves mark exactly the non-ASCII
# characters; those runs are classified with the same rules as re's \w and \s (checked
# against every code point when this was written). Text that is mostly non-ASCII takes
# the plain regex route instead (cls is None), which is faster for it.
_WORD = ord("a")
_ASCII_CLASS = bytes(
    ord("a") if (chr(b).isalnum() or b == 95) else ord(" ") if chr(b).isspace() else ord(".")
    for b in range(128)
) + b"." * 128
_MAX_NON_ASCII = 1 / 16  # above this fraction of non-ASCII characters, count with TOKEN_RE


class _NonAsciiClass(dict):
    """character -> class byte, filled on demand (the same rules as re's \\w and \\s)."""

    def __missing__(self, c: str) -> int:
        v = self[c] = ord("a") if (c.isalnum() or c == "_") else ord(" ") if c.isspace() else ord(".")
        return v


_NON_ASCII_CLASS = _NonAsciiClass()


def _char_classes(text: str) -> bytearray | None:
    if text.isascii():
        return bytearray(text.encode("ascii").translate(_ASCII_CLASS))
    enc = text.replace("?", "!").encode("ascii", "replace")
    if enc.count(b"?") > len(text) * _MAX_NON_ASCII:
        return None
    cls = bytearray(enc.translate(_ASCII_CLASS))
    find, table = enc.find, _NON_ASCII_CLASS
    i = find(b"?")
    while i >= 0:
        cls[i] = table[text[i]]
        i = find(b"?", i + 1)
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
            raise ValueError(f"overlap must be in [0, chunk_size={self.chunk_size}), got {self.overlap}")
        if self.min_chunk_tokens < 0:
            raise ValueError(f"min_chunk_tokens must be >= 0, got {self.min_chunk_tokens}")


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    n = len(text)
    first = n - len(text.lstrip())
    if first == n:
        return []
    starts = [first]
    append = starts.append
    for m in _BOUNDARY_RE.finditer(text, first):
        pos = m.end()
        if pos < n:
            c = text[pos]
            # an ASCII character was checked by the regex, a non-ASCII one is checked here
            if c < "\x80" or c in _OPENERS or (c.isalnum() and not c.islower()):
                append(pos)
            else:  # not a sentence start, unless a paragraph break / bullet start leads to it
                nl = _NEWLINE_BREAK_RE.search(text, m.start(), pos + 5)
                if nl is not None and nl.start() < pos:
                    append(pos)
    starts.append(n)
    spans = []
    for a, b in zip(starts, starts[1:]):
        e = b
        while text[e - 1].isspace():  # stops at the latest at a, a non-space character
            e -= 1
        spans.append((a, e))
    return spans


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the sentences of ``text``, in order.

    Spans carry no surrounding whitespace and together cover all non-space text.
    """
    return _sentence_spans(text)


def _chunk_id(doc_id: str, start: int, end: int, text: str) -> str:
    raw = f"{doc_id}\x1f{start}\x1f{end}\x1f{text}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:20]


def _chunk_spans(text: str, cfg: ChunkConfig) -> list[tuple[int, int, int]]:
    """(char_start, char_end, n_tokens) of each chunk of ``text``."""
    sents = _sentence_spans(text)
    if not sents:
        return []
    cum = [0]  # cum[i]: token index where sentence i starts; cum[-1]: total tokens
    total = 0
    cls = _char_classes(text)
    if cls is not None:
        count = cls.count
        for a, e in sents:  # a sentence starts with a token: + 1 if that is a word
            total += count(b".", a, e) + count(b" a", a, e) + count(b".a", a, e) + (cls[a] == _WORD)
            cum.append(total)
    else:
        findall = TOKEN_RE.findall
        for a, e in sents:
            total += len(findall(text, a, e))
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
        te = cum[j]
        # no sentence end past the previous chunk fits, or the next sentence is longer than
        # chunk_size and will be cut anyway: fill the chunk up to chunk_size tokens
        if te <= prev_te or (te < total and cum[j + 1] - te > size):
            te = min(hi, total)
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

    _merge_short_tail(chunks, cfg)
    return [(char_start(ts), char_end(te), te - ts) for ts, te in chunks]


def _merge_short_tail(chunks: list[tuple[int, int]], cfg: ChunkConfig) -> None:
    """Merge a trailing token range shorter than ``min_chunk_tokens`` into the one before it
    when the merged range fits in ``chunk_size`` (in place). After the greedy packing of
    ``_chunk_spans`` it never fits -- the previous chunk would have reached the end -- so a
    short tail is kept; the rule stays as a guard should the packing ever leave room."""
    if len(chunks) > 1:
        ts, te = chunks[-1]
        pts = chunks[-2][0]
        if te - ts < cfg.min_chunk_tokens and te - pts <= cfg.chunk_size:
            chunks[-2:] = [(pts, te)]


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
