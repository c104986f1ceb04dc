"""The rule engine of the ``simple`` backend: candidate triples of one sentence, from its tokens.

Nothing is resolved: a subject that starts with a pronoun, demonstrative or possessive is rejected, and
negation and questions give no triple. Triggers, argument boundaries and confidence: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import re

from ml.relation_triples import lexicon as lx
from ml.relation_triples.tokens import (
    ACTIVE_SURFACE, ALIAS_ADVERBS, AUX_ADVERBS, BOUNDARY, CATAPHORIC, CODE_TOKENS, CONDITION_WORDS, COPULAS,
    DISCOURSE, ING_NOUNS, INNER_DETERMINERS, IRREGULAR_PARTICIPLES, MODALS, NOT_SUPERLATIVE, OBJ_CUT,
    PARTICIPLES, PAST_SURFACE, POST_COPULA, SPLITTABLE, SUBJECT_BANNED, TAKE_IDIOMS, TRAILING_ADVERBS,
    WH_WORDS, tokenize,
)

MAX_SENTENCE_TOKENS = 150
ACRONYM_RE = re.compile(r"^[A-Z][A-Za-z&]{1,7}$")
ACRONYM_SKIP = frozenset({"of", "for", "and", "the", "in", "to", "a", "an", "on", "de", "&", "with"})
_PHRASES = sorted(((p.split(), v) for p, v in lx.COPULA_PHRASES.items()), key=lambda x: -len(x[0]))
_PLURAL_RE = re.compile(r"[a-z]{2,}[^s']s$")
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



class SentenceRules:
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
        if not ACRONYM_RE.match(acro):
            return
        letters = [c for c in acro.rstrip("s") if c.isupper()]
        if len(letters) < 2 or len(letters) != len(acro.rstrip("s").replace("&", "")):
            return
        need = [c.lower() for c in letters]
        j = i - 1
        start = None
        while j >= 0 and need and self.low[j] not in BOUNDARY:
            word = self.toks[j].strip("\"'")
            if word.lower() in ACRONYM_SKIP:
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
