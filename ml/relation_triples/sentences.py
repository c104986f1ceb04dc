"""Prose sentences of a chunk, as [start, end) offsets into the original text.

Lines that are not prose are dropped (doctest, grammar rules, reST underlines and tables,
``Args:``-style headers, indented blocks after a line ending in ``:``); bullets start a new
segment. A sentence ends at ``. ! ?`` followed by space and a non-lowercase character, except
after an abbreviation or a single initial. Both backends parse these sentences, so their
evidence spans agree.
"""

from __future__ import annotations

import re
from typing import Iterator

_LINE_RE = re.compile(r"[^\n]*\n?")
_BULLET_RE = re.compile(r"^(\s*)(?:[*\-•+]|\d{1,2}[.)]|\([a-z0-9]\))\s+(?=\S)")
_UNDERLINE_RE = re.compile(r"^\s*([=\-*~^#+`'\".:_])\1{2,}\s*$")
_CODE_LINE_RE = re.compile(
    r"^\s*(?:>>>|\.\.\.(?:\s|$)|\$\s|[+|]|[-+=]{3}|@\w)"            # doctest, shell, tables
    r"|::=|^\s*(?:def|class)\s+\w+\s*[(:]"                        # grammar, definitions
    r"|^\s*(?:from\s+[\w.]+\s+)?import\s+[\w.]+(?:\s*,\s*[\w.]+)*\s*$"
    r"|^\s*[\w.]+\s*\([^)]*\)\s*$"                                # a bare call or signature
    r"|^\s*[\w.\[\]'\"]+\s*[-+*/%|&^]?=\s*\S"                     # an assignment
)
_SECTION_RE = re.compile(r"^\s*[A-Z][A-Za-z]*(?: [A-Za-z]+)?\s*:{1,2}\s*$")  # "Raises:", "Usage::"
_SENT_END_RE = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")
ABBREVIATIONS = frozenset({
    "e.g", "i.e", "etc", "vs", "cf", "mr", "mrs", "ms", "dr", "prof", "st", "no", "fig",
    "approx", "al", "jr", "sr", "inc", "ltd", "co", "resp", "viz", "ca", "vol", "pp",
    "ie", "eg", "sec", "ch", "eq", "nr", "op", "cit", "esp", "incl", "u.s",
})
MAX_SENTENCE_CHARS = 2000  # longer "sentences" are tables or code that slipped through
_NEXT_CHAR_RE = re.compile(r"\s*(\S)")
_PREV_WORD_RE = re.compile(r"(\S+)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _split_segment(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Sentence spans inside one prose segment text[start:end]."""
    seg = text[start:end]
    cur = 0
    for m in _SENT_END_RE.finditer(seg):
        stop = m.end()
        nxt = _NEXT_CHAR_RE.match(seg, stop)
        if nxt and nxt.group(1).islower():
            continue  # "e.g. the", "foo.bar" wrapped, "3. and"
        prev = _PREV_WORD_RE.search(seg, max(0, m.start() - 40), m.start())
        word = prev.group(1).lstrip("(\"'[").lower() if prev else ""
        if m.group().startswith(".") and (word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
            continue
        yield from _strip_span(seg, cur, stop, start)
        cur = stop
    yield from _strip_span(seg, cur, len(seg), start)


def _strip_span(seg: str, a: int, b: int, offset: int) -> Iterator[tuple[int, int]]:
    piece = seg[a:b]
    lead = len(piece) - len(piece.lstrip())
    trail = len(piece) - len(piece.rstrip())
    if b - trail > a + lead:
        yield offset + a + lead, offset + b - trail


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of every prose sentence of text (see the module docstring)."""
    lines: list[tuple[int, str]] = []
    pos = 0
    for m in _LINE_RE.finditer(text):
        if not m.group():
            break
        lines.append((pos, m.group().rstrip("\r\n")))
        pos = m.end()

    paragraphs: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    for item in lines:
        if item[1].strip():
            current.append(item)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)

    spans: list[tuple[int, int]] = []
    code_indent: int | None = None
    prev_colon = False
    prose_indent = 0
    for para in paragraphs:
        first = para[0][1]
        ind = _indent(first)
        bullet = _BULLET_RE.match(first) is not None
        if code_indent is not None:
            if ind >= code_indent:
                continue
            code_indent = None
        if prev_colon and ind > prose_indent and not bullet:
            code_indent = ind
            prev_colon = False
            continue

        seg_start: int | None = None
        seg_end = 0

        def flush() -> None:
            nonlocal seg_start
            if seg_start is not None and seg_end > seg_start:
                spans.extend(_split_segment(text, seg_start, seg_end))
            seg_start = None

        for lstart, line in para:
            if _CODE_LINE_RE.search(line) or _UNDERLINE_RE.match(line) or _SECTION_RE.match(line):
                flush()
                continue
            m = _BULLET_RE.match(line)
            if m:
                flush()
            content_start = lstart + (m.end() if m else _indent(line))
            if seg_start is None:
                seg_start = content_start
            seg_end = lstart + len(line.rstrip())
        flush()
        prose_indent = ind
        prev_colon = para[-1][1].rstrip().endswith(":")
    return spans
