"""``simple``: rule-based relation extraction over sentences, no dependencies.

Pipeline for one chunk:

1. **Sentences.** The text is cut into paragraphs (blank lines) and prose segments.
   Lines that are not prose are dropped: doctest (``>>>``, ``...``), grammar rules
   (``::=``), reST underlines and tables, ``Args:``-style section headers, and indented
   blocks that follow a line ending in ``:`` (code examples in the pydoc topics and
   docstrings). Bullets start a new segment. Segments are split into sentences at
   ``. ! ?`` followed by space and a non-lowercase character, except after common
   abbreviations (e.g., i.e., etc., Mr., single initials). Offsets always refer to the
   original chunk text; the evidence span of a triple is its sentence, stripped.
2. **Tokens.** Inline markup is removed (roles, backticks, ``*emphasis*``), then the
   sentence is tokenised so that quoted literals (``"x = 1"``, ``'r'``), dotted names and
   calls (``os.path.join()``) are single tokens and punctuation is separate.
3. **Triggers.** Every token is tested as a relation trigger, with the tables of
   ``lexicon.py``: copulas (``is/are/was/were/be/been``: passives "is written by",
   fixed phrases "is equivalent to", relational nouns "is a subclass of", the default
   "is a/the Y" -> is_a, "The default X is Y" -> defaults_to), active verbs ("uses",
   "returns", "defaults to", ...), past-tense creation verbs ("Guido created Python"),
   appositions at the start of a sentence ("X, a Y, ..."), alias appositions
   ("X, also known as Y", "X (also called Y)") and acronyms ("Simple API for XML (SAX)").
4. **Arguments.** The subject is the run of tokens between the previous clause boundary
   (, ; : ( ) -- .) and the verb group (auxiliaries and adverbs such as "may", "also",
   "usually" are the verb group, and are read for hedges and negation). Leading
   discourse words are skipped ("However", "Note that"), subordinators are skipped but
   remembered ("If X is a Y" -> hypothetical, heavily penalised). A subject is rejected
   when it starts with a pronoun, demonstrative or possessive ("it", "this module",
   "its value": nothing is resolved, no subject is invented), contains a verb or a
   relative word, has a determiner not preceded by a preposition (a sign that the span
   is not one noun phrase) or runs over ``max_arg_words``. Imperative docstring
   sentences ("Return the ...", "Raise ValueError if ...") have no subject and give
   nothing. The object runs from the trigger to the first clause boundary, relative or
   subordinating word, preposition other than "of", or verb; coordinated names
   ("raises TypeError or ValueError", "by Bill Gates and Paul Allen") give one triple
   each. Both arguments lose leading determiners, quotes and trailing punctuation.
5. **Confidence.** ``lexicon.score``: pattern prior x hedges x subordinate clause x
   conditional tail x argument and sentence length (see ``lexicon``). Negated relations
   ("is not a", "never returns", "contains no") and questions give no triple.
"""

from __future__ import annotations

import re
from typing import Iterator

from ml.fsutil import digest_json
from ml.relation_triples import lexicon as lx
from ml.relation_triples.base import Triple

# Bump whenever a rule, table or threshold changes what comes out: caches key on it.
RULES_VERSION = "1"
DEFAULT_OPTIONS = {"max_arg_words": 8}

# --- sentences ---------------------------------------------------------------------------

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
MAX_SENTENCE_TOKENS = 150
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


# --- tokens ------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r'"[^"]{1,120}"'                                  # "double-quoted literal"
    r"|'[^'\s][^']{0,60}'(?!\w)"                      # 'single-quoted literal'
    r"|[^\s,;:!?()\[\]\"<](?:[^\s,;:!?()\[\]\"]|\([^()\n]{0,40}\)|\[[^\s\[\]]*\]|:(?=[^\s,;:()]))*"  # word, name, call
    r"|\S"
)
BOUNDARY = frozenset({",", ";", ":", "(", ")", "[", "]", ".", "!", "?", "--", "---", "—",
                      "–", "-", "…", "e.g", "i.e", "e.g.", "i.e.", '"', "'", "<", ">"})
CODE_TOKENS = frozenset({"=", "==", "!=", ">>>", "::=", "->", "=>", "{", "}", "+=", "-=", "<=", ">="})

MODALS = frozenset({"may", "might", "can", "could", "would", "will", "shall", "should", "must",
                    "do", "does", "did", "cannot"})
AUX_ADVERBS = MODALS | lx.NEGATIONS | frozenset(lx.HEDGES) | frozenset({
    "also", "always", "then", "now", "still", "only", "simply", "actually", "just",
    "automatically", "currently", "already", "further", "additionally", "optionally",
    "merely", "directly", "internally", "implicitly", "explicitly", "first", "really",
    "effectively", "originally", "later", "eventually", "initially", "thereby", "thus",
    "therefore", "consequently", "instead", "properly", "correctly", "silently",
    "immediately", "finally", "subsequently", "officially", "formally", "itself",
})
POST_COPULA = AUX_ADVERBS | frozenset({"longer", "commonly", "better", "variously",
                                       "informally", "indeed", "otherwise"})
DISCOURSE = frozenset({"and", "or", "nor", "but", "so", "yet", "thus", "hence", "therefore", "then",
                       "also", "however", "moreover", "furthermore", "additionally",
                       "finally", "similarly", "likewise", "consequently", "instead",
                       "now", "note", "notably", "indeed", "still", "besides", "again",
                       "conversely", "alternatively", "accordingly", "meanwhile", "next",
                       "firstly", "secondly", "lastly", "today", "currently", "originally",
                       "nowadays", "traditionally", "historically", "technically"})
SUBJECT_BANNED = frozenset({
    "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "do",
    "does", "did", "can", "could", "will", "would", "shall", "should", "may", "might",
    "must", "that", "which", "who", "whom", "whose", "where", "when", "whenever", "if",
    "unless", "whether", "because", "since", "while", "although", "though", "whereas",
    "than", "there", "here", "it", "they", "we", "you", "he", "she", "i", "them",
    "so", "but", "then",
    # frequent third-person verbs: a subject containing one is a clause, not a noun phrase
    "adds", "makes", "gets", "creates", "gives", "allows", "causes", "means", "tells", "lets",
    "keeps", "prints", "tries", "checks", "converts", "handles", "produces", "generates",
    "looks", "finds", "shows", "moves", "opens", "sends", "stores", "becomes", "remains",
    "seems", "appears", "requires", "needs", "wants", "applies", "refers", "describes",
    "represents", "specifies", "determines", "indicates", "ensures", "removes", "replaces",
}) | lx.NEGATIONS
INNER_DETERMINERS = lx.DETERMINERS | frozenset({"this", "these", "those", "its", "their",
                                                "his", "her", "our", "your", "my"})
IRREGULAR_PARTICIPLES = frozenset({
    "been", "done", "gone", "seen", "made", "given", "taken", "become", "begun", "written",
    "run", "set", "put", "read", "got", "gotten", "found", "left", "sent", "built",
    "shown", "known", "held", "kept", "brought", "thought", "told", "said", "paid", "won",
    "lost", "meant", "chosen", "broken", "spoken", "driven", "fallen", "grown", "thrown",
    "drawn", "hidden", "forgotten", "bound", "to", "already", "just", "also", "never",
    "not", "no", "yet", "always", "since",
})
TAKE_IDIOMS = frozenset({"care", "place", "precedence", "priority", "effect", "time",
                         "advantage", "ownership", "turns", "part", "account", "note",
                         "over", "hold", "shape", "charge", "control", "action", "steps",
                         "long", "longer", "forever", "while", "too"})
ALIAS_ADVERBS = frozenset({"also", "otherwise", "better", "commonly", "sometimes", "formerly",
                           "often", "usually", "informally", "now", "originally"})
SPLITTABLE = frozenset({"raises", "created_by", "uses", "contains", "provides", "alias_of",
                        "member_of", "accepts"})
CONDITION_WORDS = frozenset({"if", "unless", "when", "whenever", "whether", "provided", "iff"})
NOT_SUPERLATIVE = frozenset({"request", "interest", "digest", "manifest", "contest", "protest",
                             "harvest", "forest", "suggest", "conquest", "inquest", "bequest"})
ING_NOUNS = frozenset({"string", "thing", "encoding", "mapping", "binding", "setting", "padding",
                       "heading", "building", "ring", "spring", "logging", "threading",
                       "warning", "listing", "something", "anything", "everything", "nothing"})
_ACRONYM_RE = re.compile(r"^[A-Z][A-Za-z&]{1,7}$")
_ACRONYM_SKIP = frozenset({"of", "for", "and", "the", "in", "to", "a", "an", "on", "de", "&", "with"})


def _inflect_3sg(verb: str) -> str:
    if verb == "have":
        return "has"
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _build_active() -> dict[str, list[tuple[str, str | None, bool, tuple[str, bool, float]]]]:
    """surface verb -> [(lemma phrase, particle, is_base_form, rule)]"""
    table: dict[str, list] = {}
    for phrase, rule in lx.ACTIVE.items():
        verb, _, particle = phrase.partition(" ")
        for form, base in ((_inflect_3sg(verb), False), (verb, True)):
            table.setdefault(form, []).append((phrase, particle or None, base, rule))
    for forms in table.values():
        forms.sort(key=lambda f: f[1] is None)  # phrases with a particle first
    return table


ACTIVE_SURFACE = _build_active()
PAST_SURFACE = {past: lemma for lemma, past in lx.ACTIVE_PAST.items()}
PARTICIPLES: dict[str, list[tuple[str, str, bool, float]]] = {}
for (_lemma, _prep), (_pp, _label, _inv, _prior) in lx.PASSIVE.items():
    PARTICIPLES.setdefault(_pp, []).append((_prep, _label, _inv, _prior))
VERB_FORMS = frozenset(f for f, rules in ACTIVE_SURFACE.items() if any(not r[2] for r in rules))
COPULAS = frozenset({"is", "are", "was", "were", "be", "been"})
SUBJECT_BANNED = SUBJECT_BANNED | VERB_FORMS
OBJ_CUT = (lx.PREPOSITIONS - {"of"}) | SUBJECT_BANNED | VERB_FORMS | COPULAS | frozenset({
    "and", "or", "nor", "but", "so", "except", "until", "instead", "rather", "unlike",
    "using", "containing", "having", "called", "named", "given", "passed", "returned",
    "used", "made", "created", "defined", "specified", "described", "representing",
    "indicating", "describing", "specifying", "holding", "based", "such", "also", "only",
    "otherwise", "etc", "etc.", "respectively", "too", "itself", "themselves", "instead",
    "according", "depending", "whereby", "thereby", "wherein", "either", "neither",
})
_PHRASES = sorted(((p.split(), v) for p, v in lx.COPULA_PHRASES.items()), key=lambda x: -len(x[0]))
_PLURAL_RE = re.compile(r"[a-z]{2,}[^s']s$")


TRAILING_ADVERBS = frozenset({"just", "only", "also", "too", "even", "still", "again", "instead",
                              "here", "there", "now", "then", "already", "first"})
WH_WORDS = frozenset({"how", "what", "whether", "which", "when", "where", "who", "why", "if"})
CATAPHORIC = frozenset({"following", "above", "below", "next"})
_ADJ_COORD_RE = re.compile(r"[a-z]{3,}(?:ite|ive|ous|ful|less|ic|al|ed)$")


_TRAILING_MODIFIER_RE = re.compile(r"^(?:[a-z]{3,}(?:ed|able|ible)|open|available|necessary|possible)$")


def _closing_paren(low: list[str], k: int) -> int | None:
    depth = 0
    for j in range(k, min(len(low), k + 40)):
        depth += low[j] == "("
        depth -= low[j] == ")"
        if depth == 0:
            return j
    return None


def _reduced_clause(low: list[str], k: int) -> bool:
    """True where token k starts a participle clause inside a noun phrase."""
    w = low[k]
    if len(w) <= 4 or not w.isalpha():
        return False
    nxt = low[k + 1] if k + 1 < len(low) else ""
    if w.endswith("ing") and w not in ING_NOUNS:
        # "a string giving a filename", "a flag controlling how": a gerund taking an object
        # (not a modifier as in "programming language")
        return (nxt in lx.DETERMINERS or nxt in lx.PRONOUNS or nxt in lx.PREPOSITIONS
                or nxt in WH_WORDS or nxt[:1] in "\"'" or nxt[:1].isdigit())
    if w.endswith("ed") and nxt in lx.PREPOSITIONS:
        return True
    return False


def tokenize(sentence: str) -> list[str]:
    out: list[str] = []
    for tok in _TOKEN_RE.findall(lx.strip_markup(sentence)):
        if len(tok) > 1 and tok.endswith(".") and not tok.endswith("..") and tok[0] not in "\"'":
            stem = tok[:-1]
            if stem.lower() in ABBREVIATIONS or stem.lower().rstrip(".") in ABBREVIATIONS:
                out.append(stem)
                continue
            out.extend((stem, "."))
        else:
            out.append(tok)
    return out


class _Sentence:
    """Candidate triples of one sentence, from its tokens."""

    def __init__(self, raw: str, max_words: int):
        self.toks = tokenize(raw)
        self.low = [t.lower() for t in self.toks]
        self.n = len(self.toks)
        self.words = sum(1 for t in self.toks if t not in BOUNDARY)
        self.max_words = max_words
        self.out: list[tuple[str, str, str, float]] = []

    # -- arguments ----------------------------------------------------------------------

    def _boundary_before(self, end: int) -> int:
        k = end - 1
        while k >= 0 and self.low[k] not in BOUNDARY:
            k -= 1
        return k

    def subject(self, end: int):
        """(subject, hedges, subordinate) for a subject ending just before end, or None."""
        low = self.low
        k = self._boundary_before(end)
        start = k + 1
        if start == end and k > 0:
            if low[k] == ",":  # "X, a Y, is ..." / "X, also known as Y, is ..."
                k2 = self._boundary_before(k)
                appos = low[k2 + 1:k]
                if k2 > 0 and low[k2] == "," and appos and (
                        appos[0] in ("a", "an", "the") or appos[:3] == ["also", "known", "as"]
                        or appos[:2] == ["also", "called"]):
                    start, end = self._boundary_before(k2) + 1, k2
            elif low[k] == ")":  # "X (Y) is ..."
                depth, j = 0, k
                while j >= 0:
                    depth += low[j] == ")"
                    depth -= low[j] == "("
                    if depth == 0:
                        break
                    j -= 1
                if j > 0:
                    start, end = self._boundary_before(j) + 1, j
        hedges: list[str] = []
        sub = None
        while start < end:
            w = low[start]
            if w in lx.HYPOTHETICAL:
                sub = "hypothetical"
            elif w in lx.SUBORDINATORS:
                sub = sub or "subordinate"
            elif w in lx.HEDGES and w not in MODALS:
                hedges.append(w)
            elif w in DISCOURSE:
                if w == "note" and start + 1 < end and low[start + 1] == "that":
                    start += 1
            else:
                break
            start += 1
        if start >= end or end - start > self.max_words + 2:
            return None
        lw = low[start:end]
        if any(w in SUBJECT_BANNED or w.endswith("n't") for w in lw):
            return None
        for j in range(1, len(lw)):
            if lw[j] in INNER_DETERMINERS and lw[j - 1] not in lx.PREPOSITIONS:
                return None
        subj = lx.clean_arg(" ".join(self.toks[start:end]), strip_quantifiers=True)
        if not lx.arg_ok(subj, self.max_words, role="subject"):
            return None
        return subj, hedges, sub

    def object(self, start: int, *, cut=OBJ_CUT):
        """(object, stop index) for an object starting at start, or None."""
        low, n = self.low, self.n
        j = start
        while j < n and low[j] in ("either", "both"):
            j += 1
        if j >= n or low[j] in lx.NEGATIONS:
            return None
        if low[j] in CATAPHORIC or (low[j] in lx.DETERMINERS and j + 1 < n and low[j + 1] in CATAPHORIC):
            return None  # "the following attributes:": the list comes later
        k = j
        kept: list[int] = []
        while k < n and low[k] not in cut:
            if low[k] == "(" and k > j:
                close = _closing_paren(low, k)
                if close is not None and close - k <= 8:
                    k = close + 1  # "the fully qualified (dotted) module name"
                    continue
            if low[k] in BOUNDARY or (k > j and _reduced_clause(low, k)):
                break  # "a primary followed by ...", "a string giving a filename"
            if kept and low[k] in INNER_DETERMINERS and low[kept[-1]] not in lx.PREPOSITIONS:
                break  # "the name of the module [the function was defined in]"
            kept.append(k)
            k += 1
        at_edge = k >= n or low[k] in BOUNDARY or low[k] in lx.PREPOSITIONS
        while kept:
            last = low[kept[-1]]
            if last in lx.PREPOSITIONS or last in lx.DETERMINERS:
                kept.pop()  # "a compact way of [showing ...]"
            elif len(kept) >= 2 and (last in TRAILING_ADVERBS or (last.endswith("ly") and last.isalpha())):
                kept.pop()  # "the index of the character [just] after ..."
            elif len(kept) >= 2 and at_edge and _TRAILING_MODIFIER_RE.match(last):
                kept.pop()  # "a subnormal number [rounded], if necessary", "a socket [usable] to"
            else:
                break
        if not kept or len(kept) > self.max_words + 2:
            return None
        obj = lx.clean_arg(" ".join(self.toks[i] for i in kept))
        if not lx.arg_ok(obj, self.max_words, role="object"):
            return None
        return obj, k

    def aux_before(self, i: int, *, allow_have: bool = False) -> tuple[int, list[str]]:
        j = i - 1
        words: list[str] = []
        while j >= 0 and (self.low[j] in AUX_ADVERBS or self.low[j].endswith("n't")
                          or (allow_have and self.low[j] in ("has", "have", "had"))):
            words.append(self.low[j])
            j -= 1
        return j + 1, words

    # -- emitting -----------------------------------------------------------------------

    def emit(self, subject: str, label: str, obj: str, prior: float, *, inverted: bool = False,
             hedges=(), sub=None, stop: int | None = None, factor: float = 1.0) -> None:
        if inverted:
            subject, obj = obj, subject
        if subject.lower() == obj.lower():
            return
        tail = stop is not None and stop < self.n and self.low[stop] in CONDITION_WORDS
        if label == "raises" and lx.EXCEPTION_RE.search(obj if not inverted else subject):
            factor *= 1.1
        conf = lx.score(prior, subject, obj, hedges=hedges, subordinate=sub, conditional_tail=tail,
                        sentence_words=self.words, factor=factor)
        self.out.append((subject, label, obj, conf))

    def emit_object(self, subj_info, label: str, start: int, prior: float, *, inverted=False,
                    extra_hedges=(), factor: float = 1.0, by_agent: bool = False) -> int | None:
        """Parse the object at start and emit, plus coordinated names; the stop index."""
        subj, hedges, sub = subj_info
        parsed = self.object(start)
        if parsed is None:
            return None
        obj, k = parsed
        head = obj.split()[0]
        if by_agent and head.islower() and head.endswith("ing") and head not in ING_NOUNS:
            return None  # "created by calling X": a means, not an agent
        hedges = [*hedges, *extra_hedges]
        self.emit(subj, label, obj, prior, inverted=inverted, hedges=hedges, sub=sub, stop=k,
                  factor=factor)
        if label in SPLITTABLE and lx.name_like(obj):
            k = self._conjuncts(subj, label, k, prior, inverted, hedges, sub, factor)
        return k

    def _conjuncts(self, subj, label, k, prior, inverted, hedges, sub, factor) -> int:
        low, n = self.low, self.n
        for _ in range(6):
            j = k
            while j < n and low[j] in (",", "and", "or"):
                j += 1
            if j == k or j >= n:
                break
            parsed = self.object(j)
            if parsed is None:
                break
            obj, stop = parsed
            if not lx.name_like(obj) or len(obj.split()) > 4:
                break
            if stop < n and low[stop] not in BOUNDARY and low[stop] not in (lx.PREPOSITIONS | {"and", "or"} | CONDITION_WORDS):
                break  # the next word starts a clause: "A uses B and C returns D"
            self.emit(subj, label, obj, prior, inverted=inverted, hedges=hedges, sub=sub,
                      stop=stop, factor=factor * 0.9)
            k = stop
        return k

    # -- rules --------------------------------------------------------------------------

    def run(self) -> list[tuple[str, str, str, float]]:
        if self.n == 0 or self.n > MAX_SENTENCE_TOKENS or any(t in CODE_TOKENS for t in self.toks):
            return []
        if self.toks[-1] == "?" or (self.n > 1 and self.toks[-2] == "?"):
            return []
        low = self.low
        self.apposition()
        for i, w in enumerate(low):
            if w in COPULAS:
                self.copula(i)
            if w in ACTIVE_SURFACE:
                self.active(i)
            if w in PAST_SURFACE:
                self.active_past(i)
            if w in ("known", "called", "aka", "a.k.a", "a.k.a."):
                self.alias_apposition(i)
            if w == "(" and i + 2 < self.n and low[i + 2] == ")":
                self.acronym(i)
        return self.out

    def copula(self, i: int) -> None:
        low, n = self.low, self.n
        aux_start, aux = self.aux_before(i, allow_have=True)
        if any(w in lx.NEGATIONS or w.endswith("n't") for w in aux):
            return
        p = i + 1
        adv: list[str] = []
        while p < n and low[p] in POST_COPULA:
            adv.append(low[p])
            p += 1
        if any(w in lx.NEGATIONS for w in adv) or p >= n:
            return
        info = self.subject(aux_start)
        if info is None:
            return
        subj, hedges, sub = info
        hedges = hedges + [w for w in aux + adv if w in lx.HEDGES]
        info = (subj, hedges, sub)
        w = low[p]

        # 1. passive: "is written by", "was founded in", "is also known as", "also called"
        if w in PARTICIPLES:
            for prep, label, inverted, prior in PARTICIPLES[w]:
                if p + 1 < n and low[p + 1] == prep:
                    stop = self.emit_object(info, label, p + 2, prior, inverted=inverted,
                                            by_agent=prep == "by")
                    if w == "founded" and stop is not None:
                        self._founded_tail(info, stop)
                    return
            return
        if w == "called":
            if set(adv) & lx.CALLED_ADVERBS:
                label, inverted, prior = lx.CALLED_RULE
                self.emit_object(info, label, p + 1, prior, inverted=inverted)
            return
        # 2. fixed phrases: "is equivalent to", "is the same as", "is part of", "is one of the"
        for words, (label, prior) in _PHRASES:
            if low[p:p + len(words)] == words:
                self.emit_object(info, label, p + len(words), prior)
                return
        # 3. "The default mode is 'rb'" / "The default value of X is Y"
        sw = subj.lower().split()
        if sw[0] == "default" and len(sw) > 1:
            rest = subj.split()[1:]
            if rest[0].lower() in ("value", "values", "setting") and len(rest) > 2 and rest[1].lower() in ("of", "for"):
                rest = rest[2:]
            elif rest[0].lower() in ("of", "for") and len(rest) > 1:
                rest = rest[1:]
            target = lx.clean_arg(" ".join(rest))
            if low[p] in IRREGULAR_PARTICIPLES or (low[p].endswith("ed") and low[p].isalpha()):
                return  # "a default message is printed"
            if lx.arg_ok(target, self.max_words, role="subject") and target.lower() not in ("value", "values"):
                self.emit_object((target, hedges, sub), "defaults_to", p, lx.PRIOR_DEFAULT_COPULA)
            return
        if w not in ("a", "an", "the"):
            return
        # 4. "is a (direct) subclass of", "is an instance of", "is a kind of"
        q = p + 1
        if q < n and low[q] == "(":
            while q < n and low[q] != ")":
                q += 1
            q += 1
        mods = 0
        while q < n and low[q] in lx.RELATIONAL_MODIFIERS and mods < 2:
            q += 1
            mods += 1
        for width in (2, 1):
            if q + width >= n:
                continue
            noun = " ".join(low[q:q + width])
            prep = low[q + width]
            rule = lx.COPULA_NOUNS.get((noun, prep))
            if rule:
                label, inverted, prior = rule
                self.emit_object(info, label, q + width + 1, prior, inverted=inverted)
                return
            if noun in lx.TAXONOMIC_NOUNS and prep == "of" and w in ("a", "an"):
                self.emit_object(info, "is_a", q + width + 1, lx.PRIOR_IS_A_TAXONOMIC)
                return
        # 5. "X is a Y" / "X is the Y"
        prior = lx.PRIOR_IS_A_DEFINITE if w == "the" else lx.PRIOR_IS_A_INDEFINITE
        start = p
        if p + 3 < n and low[p + 2] == "," and _ADJ_COORD_RE.match(low[p + 1]):
            start = p + 3  # "a finite, iterable container" -> "iterable container"
            if low[start] in lx.DETERMINERS or low[start] in ("and", "or"):
                return
        elif p + 1 < n and low[p + 1].endswith("est") and low[p + 1] not in NOT_SUPERLATIVE and len(low[p + 1]) > 5:
            return  # "is the simplest and most ..."
        self.emit_object(info, "is_a", start, prior)

    def _founded_tail(self, info, stop: int) -> None:
        # "X was founded by Y in 1991" / "X was founded in 1991 by Y": both triples
        if stop < self.n and self.low[stop] == "in":
            self.emit_object(info, "founded_in", stop + 1, lx.PASSIVE[("found", "in")][3])
        elif stop < self.n and self.low[stop] == "by":
            self.emit_object(info, "created_by", stop + 1, lx.PASSIVE[("found", "by")][3], by_agent=True)

    def active(self, i: int) -> None:
        low, n = self.low, self.n
        for phrase, particle, base, (label, inverted, prior) in ACTIVE_SURFACE[low[i]]:
            start = i + 1
            if particle:
                if i + 1 >= n or low[i + 1] != particle:
                    continue
                start = i + 2
            if start >= n:
                return
            nxt = low[start]
            if phrase == "have" and (nxt in IRREGULAR_PARTICIPLES or nxt.endswith("ed")):
                return
            if nxt in lx.NEGATIONS or nxt in IRREGULAR_PARTICIPLES and nxt in ("been", "to"):
                return
            if phrase == "take" and nxt in TAKE_IDIOMS:
                return
            if i > 0 and low[i - 1] in ("to", "a", "an", "the", "of", "its", "their", "this"):
                return  # infinitive ("used to return") or a noun ("the use of")
            aux_start, aux = self.aux_before(i)
            if any(w in lx.NEGATIONS or w.endswith("n't") for w in aux):
                return
            info = self.subject(aux_start)
            if info is None:
                return
            subj, hedges, sub = info
            if base and not (set(aux) & MODALS) and not (_PLURAL_RE.search(subj.split()[-1].lower())
                                                          or " and " in subj):
                return  # base form needs a modal or a plural subject ("Sets contain ...")
            if phrase == "take" and start + 1 < n and low[start + 1] in TAKE_IDIOMS:
                return  # "takes a long time", "takes the place of"
            hedges = hedges + [w for w in aux if w in lx.HEDGES]
            self.emit_object((subj, hedges, sub), label, start, prior, inverted=inverted)
            return

    def active_past(self, i: int) -> None:
        low, n = self.low, self.n
        if i + 1 >= n or low[i + 1] in ("by", "in", "as", "to", "for", "with", "from"):
            return  # passive or participle, handled by copula()
        if i > 0 and low[i - 1] in COPULAS | {"has", "have", "had", "being", "get", "gets", "got"}:
            return
        aux_start, aux = self.aux_before(i)
        if aux:
            return  # "may have created": not a plain past-tense statement
        info = self.subject(aux_start)
        if info is None or not lx.name_like(info[0]):
            return  # authorship needs a named agent ("Guido created", not "the call created")
        label, inverted, prior = lx.ACTIVE_PAST_RULE
        self.emit_object(info, label, i + 1, prior, inverted=inverted)

    def apposition(self) -> None:
        """Sentence-initial "X, a Y, <rest>" -> (X, is_a, Y)."""
        low, n = self.low, self.n
        if "," not in low:
            return
        c1 = low.index(",")
        if c1 == 0 or c1 + 2 >= n or low[c1 + 1] not in ("a", "an", "the"):
            return
        c2 = c1 + 2
        while c2 < n and low[c2] not in BOUNDARY:
            if low[c2] in SUBJECT_BANNED:
                return
            c2 += 1
        if c2 >= n or low[c2] != "," or c2 - c1 > 10 or c2 + 1 >= n:
            return
        if low[c2 + 1] in ("and", "or", "a", "an", "the", "but", "etc", "which", "who", "nor"):
            return  # a list, not an apposition
        info = self.subject(c1)
        if info is None or not lx.name_like(info[0]):
            return
        prior = lx.PRIOR_APPOSITION_DEFINITE if low[c1 + 1] == "the" else lx.PRIOR_APPOSITION_INDEFINITE
        self.emit_object(info, "is_a", c1 + 1, prior)

    def alias_apposition(self, i: int) -> None:
        """"X, also known as Y" / "X (also called Y)" / "X, aka Y" -> (Y, alias_of, X)."""
        low = self.low
        w = low[i]
        if w in ("known",):
            if i + 1 >= self.n or low[i + 1] != "as":
                return
            start = i + 2
        else:
            start = i + 1
        j = i - 1
        if w in ("known", "called"):
            if j < 0 or low[j] not in ALIAS_ADVERBS:
                return
            j -= 1
        if j < 1 or low[j] not in (",", "("):
            return
        info = self.subject(j)
        if info is None:
            return
        hedges = [low[i - 1]] if low[i - 1] in lx.HEDGES else []
        self.emit_object(info, "alias_of", start, lx.PRIOR_ALIAS_APPOSITION, inverted=True,
                         extra_hedges=hedges)

    def acronym(self, i: int) -> None:
        """"Simple API for XML (SAX)" -> (SAX, alias_of, Simple API for XML)."""
        acro = self.toks[i + 1]
        if not _ACRONYM_RE.match(acro):
            return
        letters = [c for c in acro.rstrip("s") if c.isupper()]
        if len(letters) < 2 or len(letters) != len(acro.rstrip("s").replace("&", "")):
            return
        need = [c.lower() for c in letters]
        j = i - 1
        start = None
        while j >= 0 and need and self.low[j] not in BOUNDARY:
            word = self.toks[j].strip("\"'")
            if word.lower() in _ACRONYM_SKIP:
                j -= 1
                continue
            parts = [p for p in re.split(r"[-/]", word) if p]
            initials = [p[0].lower() for p in parts]
            if len(initials) > len(need) or need[-len(initials):] != initials:
                # CamelCase single word ("JavaScript Object Notation" needs words)
                return
            del need[-len(initials):]
            start = j
            j -= 1
        if need or start is None:
            return
        expansion = " ".join(self.toks[start:i])
        if not any(t[:1].isupper() for t in self.toks[start:i]):
            return
        expansion = lx.clean_arg(expansion)
        if not lx.arg_ok(expansion, self.max_words, role="object"):
            return
        self.emit(acro, "alias_of", expansion, lx.PRIOR_ACRONYM)


class SimpleExtractor:
    """The ``simple`` backend: rules over sentences, no external dependency."""

    name = "simple"

    def __init__(self, max_arg_words: int = DEFAULT_OPTIONS["max_arg_words"]):
        if not isinstance(max_arg_words, int) or not 1 <= max_arg_words <= 32:
            raise ValueError(f"max_arg_words must be an int in [1, 32], got {max_arg_words!r}")
        self.max_arg_words = max_arg_words
        options = {"max_arg_words": max_arg_words}
        # Non-default options change the output, so they are part of the cache key.
        self.version = RULES_VERSION if options == DEFAULT_OPTIONS else f"{RULES_VERSION}+{digest_json(options, 8)}"

    def __repr__(self) -> str:
        return f"SimpleExtractor(version={self.version!r}, max_arg_words={self.max_arg_words})"

    def extract(self, text: str) -> list[Triple]:
        best: dict[tuple[str, str, str, int], Triple] = {}
        for start, end in sentence_spans(text):
            if end - start > MAX_SENTENCE_CHARS:
                continue
            for subj, label, obj, conf in _Sentence(text[start:end], self.max_arg_words).run():
                key = (subj, label, obj, start)
                if key not in best or best[key].confidence < conf:
                    best[key] = Triple(subj, label, obj, conf, start, end)
        return sorted(best.values(), key=lambda t: t.start)
