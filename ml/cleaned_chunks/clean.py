"""Text cleaning as polars expressions (Rust regex, vectorised over a batch of docs).

Order: NFKC → markup (HTML; wiki only on docs that look like wiki text) → entities →
control characters → C4-style line rules → boilerplate lines → whitespace.

Each line rule counts the lines it removed (one column per rule in ``clean_frame``), so the stats say how
much text each rule took away; doc-level decisions live in ``filters.py``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import polars as pl

HTML_TAGS = (
    "a abbr b big blockquote body br caption center cite code dd del div dl dt em figcaption figure font "
    "footer form h1 h2 h3 h4 h5 h6 head header hr html i iframe img input ins kbd label li link main meta "
    "nav noscript ol p pre q s samp section small span strike strong sub sup table tbody td tfoot th thead "
    "title tr tt u ul var nowiki references ref gallery math poem"
).split()
_TAG_ALT = "|".join(HTML_TAGS)
BLOCK_TAG = r"(?i)<br\s*/?>|</?(?:p|div|li|ul|ol|dl|dt|dd|tr|table|h[1-6]|blockquote|pre|section|header|footer|figure|title)\b[^<>]*>"
ANY_TAG = rf"(?i)</?(?:{_TAG_ALT})\b[^<>]*/?>"
NAMED_ENTITIES = {
    "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&#39;": "'", "&nbsp;": " ",
    "&ndash;": "–", "&mdash;": "—", "&hellip;": "…", "&laquo;": "«", "&raquo;": "»", "&copy;": "©",
}
CONTROL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\u200B-\u200D\u2060\uFEFF]"
WIKI_HINT = r"\[\[|\{\{|(?m)^={2,}[^=\n]+={2,}\s*$|'''"
DEFAULT_BOILERPLATE = (
    r"cookie policy", r"uses cookies", r"accept (all )?cookies", r"privacy policy", r"terms of (use|service)",
    r"all rights reserved", r"subscribe to (our|the) newsletter", r"skip to (main )?content",
    r"click here to", r"share (this|on) (facebook|twitter)", r"follow us on",
)
C4_POLICY = (r"terms of use", r"privacy policy", r"cookie policy", r"uses cookies", r"use of cookies", r"use cookies")


@dataclass(frozen=True)
class CleanConfig:
    nfkc: bool = True
    strip_html: bool = True
    strip_wiki: bool = True
    remove_control: bool = True
    boilerplate_patterns: tuple[str, ...] = DEFAULT_BOILERPLATE
    """Case-insensitive regexes: a line containing any of them is removed."""
    c4_javascript_lines: bool = True
    """C4: remove lines that mention javascript (e.g. 'please enable JavaScript')."""
    c4_policy_lines: bool = True
    """C4: remove lines about terms of use / privacy / cookie policy."""
    c4_min_words_per_line: int = 0
    """C4: remove lines with fewer words than this (C4 used 3; 0 disables: technical text has short lines)."""
    c4_max_word_length: int = 1000
    """C4: remove lines containing a 'word' longer than this (0 disables)."""
    c4_require_terminal_punct: bool = False
    """C4: keep only lines ending in terminal punctuation (off by default: it drops lists, code and headings)."""


def _lines_matching(pattern: str) -> str:
    """A regex matching whole lines (with their newline) that contain ``pattern``."""
    return rf"(?im)^[^\n]*(?:{pattern})[^\n]*(?:\n|$)"


def _unescape_numeric(s: pl.Expr) -> pl.Expr:
    # named entities in Rust; numeric ones (&#8217; &#x2019;) through the stdlib, only where present
    return pl.when(s.str.contains(r"&#[0-9]+;|&#[xX][0-9a-fA-F]+;")).then(
        s.map_elements(html.unescape, return_dtype=pl.String)
    ).otherwise(s)


def base_clean_expr(col: str, cfg: CleanConfig) -> pl.Expr:
    """Everything but the line rules: normalization, markup, entities, control chars, spaces."""
    s = pl.col(col).str.replace_all(r"\r\n?", "\n")
    if cfg.nfkc:
        s = s.str.normalize("NFKC")
    if cfg.strip_html:
        s = (s.str.replace_all(r"(?s)<!--.*?-->", "")
             .str.replace_all(r"(?is)<script\b[^>]*>.*?</script\s*>", "")
             .str.replace_all(r"(?is)<style\b[^>]*>.*?</style\s*>", "")
             .str.replace_all(r"(?is)<ref\b[^>]*/>", "")
             .str.replace_all(r"(?is)<ref\b[^>]*>.*?</ref\s*>", "")
             .str.replace_all(BLOCK_TAG, "\n")
             .str.replace_all(ANY_TAG, ""))
        s = s.str.replace_many(list(NAMED_ENTITIES), list(NAMED_ENTITIES.values()))
        s = _unescape_numeric(s)
    if cfg.strip_wiki:
        w = s
        for _ in range(3):  # templates nest: peel up to three levels
            w = w.str.replace_all(r"\{\{[^{}]*\}\}", "")
        w = (w.str.replace_all(r"(?s)\{\|.*?\|\}", "")
             .str.replace_all(r"(?i)\[\[(?:File|Image|Category|Media):[^\]]*\]\]", "")
             .str.replace_all(r"\[\[(?:[^\]|]*\|)?([^\]|]*)\]\]", "${1}")
             .str.replace_all(r"\[https?://[^\s\]]+\s+([^\]]*)\]", "${1}")
             .str.replace_all(r"\[https?://[^\s\]]+\]", "")
             .str.replace_all(r"'{2,5}([^'\n]+)'{2,5}", "${1}")
             .str.replace_all(r"(?m)^=+\s*([^=\n]*?)\s*=+\s*$", "${1}"))
        s = pl.when(s.str.contains(WIKI_HINT)).then(w).otherwise(s)
    if cfg.remove_control:
        s = s.str.replace_all(CONTROL, "")
    return s.str.replace_all(r"[ \t\f\v\u00A0\u2000-\u200A\u202F\u205F\u3000]+", " ").str.replace_all(r"(?m)^ | $", "")


def line_rules(cfg: CleanConfig) -> list[tuple[str, str]]:
    """(rule name, regex matching a whole line it removes), in the order they apply."""
    rules: list[tuple[str, str]] = []
    if cfg.c4_javascript_lines:
        rules.append(("c4_javascript_line", _lines_matching("javascript")))
    if cfg.c4_policy_lines:
        rules.append(("c4_policy_line", _lines_matching("|".join(C4_POLICY))))
    if cfg.boilerplate_patterns:
        rules.append(("boilerplate_line", _lines_matching("|".join(f"(?:{p})" for p in cfg.boilerplate_patterns))))
    if cfg.c4_max_word_length:
        rules.append(("c4_long_word_line", rf"(?m)^[^\n]*\S{{{cfg.c4_max_word_length + 1},}}[^\n]*(?:\n|$)"))
    if cfg.c4_min_words_per_line:
        if cfg.c4_min_words_per_line > 1:  # non-blank lines of 1 .. min-1 words (blank lines separate paragraphs)
            k = cfg.c4_min_words_per_line - 2
            rules.append(("c4_short_line", rf"(?m)^[ ]*\S+(?:[ ]+\S+){{0,{k}}}[ ]*(?:\n|$)"))
    if cfg.c4_require_terminal_punct:
        rules.append(("c4_no_terminal_punct", r"(?m)^[^\n]*[^.!?\"'”’)\n][ ]*(?:\n|$)"))
    return rules


def clean_frame(df: pl.DataFrame, col: str, cfg: CleanConfig, out: str = "text") -> pl.DataFrame:
    """df with ``out`` (cleaned text) and one column per line rule counting the lines it removed.

    The text is materialised after each step: an expression chain reused by several
    output columns would be re-evaluated once per column.
    """
    # lazy: common-subexpression elimination evaluates the shared when/then prefix once
    df = df.lazy().with_columns(base_clean_expr(col, cfg).alias(out)).collect()
    for name, pattern in line_rules(cfg):
        df = df.with_columns(pl.col(out).str.count_matches(pattern).alias(name),
                             pl.col(out).str.replace_all(pattern, ""))
    return df.with_columns(pl.col(out).str.replace_all(r"\n{3,}", "\n\n").str.strip_chars())


def exact_key_expr(col: str) -> pl.Expr:
    """Key for exact dedup: lower-cased text with all whitespace collapsed, hashed."""
    return pl.col(col).str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars().hash(seed=0x5EED)


def check_patterns(patterns: tuple[str, ...]) -> None:
    """Fail early, with the offending pattern named, on a regex polars/Rust cannot compile."""
    for p in patterns:
        try:
            pl.Series([""]).str.contains(p)
        except Exception as exc:  # polars raises ComputeError on a bad regex
            raise ValueError(f"invalid boilerplate pattern {p!r}: {exc}") from None
