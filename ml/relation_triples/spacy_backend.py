"""``spacy``: relation extraction from spaCy dependency parses (spaCy imported only when one is built).

It parses the same prose sentences as ``simple`` and shares its lexicon, argument checks and scoring, so
evidence spans agree; a missing spaCy or model raises ``RuntimeError(SPACY_HINT)``. What maps onto which
relation, and its version digest: DESIGN.md, "Module notes".
"""

from __future__ import annotations

from ml.fsutil import source_digest
from ml.relation_triples import lexicon as lx
from ml.relation_triples import rules, sentences, tokens
from ml.relation_triples.base import Triple

SPACY_HINT = ("parser 'spacy' needs spaCy and an English model: "
              "pip install spacy && python -m spacy download en_core_web_sm")
SOURCES = tuple(m.__file__ for m in (lx, sentences, tokens, rules)) + (__file__,)
SUBJ_DEPS = ("nsubj", "nsubjpass")
_DROP_DEPS = frozenset({"relcl", "acl", "advcl", "appos", "punct", "cc", "conj", "prep",
                        "parataxis", "mark", "dep", "ccomp", "xcomp"})
_MARKUP_TO_SPACE = str.maketrans({"*": " ", "`": " "})
_SPLITTABLE = frozenset({"raises", "created_by", "uses", "contains", "provides", "alias_of",
                         "member_of", "accepts"})


def _load(model: str, nlp=None):
    try:
        import spacy
    except ImportError as exc:
        raise RuntimeError(SPACY_HINT) from exc
    if nlp is None:
        try:
            nlp = spacy.load(model, exclude=["ner"])
        except OSError as exc:  # model not installed
            raise RuntimeError(SPACY_HINT) from exc
    if not any("token.dep" in nlp.get_pipe_meta(name).assigns for name in nlp.pipe_names):
        raise RuntimeError(f"spaCy pipeline {nlp.meta.get('name', model)!r} has no dependency parser; {SPACY_HINT}")
    return spacy, nlp


class SpacyExtractor:
    name = "spacy"

    def __init__(self, model: str = "en_core_web_sm", max_arg_words: int = 8, nlp=None):
        """``nlp``: a loaded pipeline to use instead of ``spacy.load(model)``."""
        if not isinstance(max_arg_words, int) or not 1 <= max_arg_words <= 32:
            raise ValueError(f"max_arg_words must be an int in [1, 32], got {max_arg_words!r}")
        spacy, self.nlp = _load(model, nlp)
        self.max_arg_words = max_arg_words
        meta = self.nlp.meta
        model_id = f"{meta.get('lang', 'en')}_{meta.get('name', model)}-{meta.get('version', '0')}"
        version = f"{source_digest(*SOURCES)}+{model_id}+spacy{spacy.__version__}"
        if max_arg_words != 8:
            version += f"+w{max_arg_words}"
        self.version = "".join(c if c.isalnum() or c in "._+-" else "_" for c in version)

    def __repr__(self) -> str:
        return f"SpacyExtractor(version={self.version!r})"

    # -- noun phrases -------------------------------------------------------------------

    def _np(self, head, role: str) -> str | None:
        """Cleaned text of the noun phrase headed by ``head``, or None if unusable."""
        if head is None or head.pos_ == "PRON":
            return None
        drop: set[int] = set()
        for child in head.children:
            if child.dep_ in _DROP_DEPS and child.i > head.i:
                if child.dep_ == "prep" and (child.lower_ == "of" or role == "subject"):
                    continue  # "a list of strings"; subjects keep their PPs, as in simple
                drop.update(t.i for t in child.subtree)
        toks = [t for t in head.subtree if t.i not in drop]
        if not toks:
            return None
        text = "".join(t.text_with_ws for t in toks)
        arg = lx.clean_arg(text, strip_quantifiers=role == "subject")
        return arg if lx.arg_ok(arg, self.max_arg_words, role=role) else None

    @staticmethod
    def _negated(tok) -> bool:
        return any(c.dep_ == "neg" or c.lower_ in ("no", "never") for c in tok.children)

    @staticmethod
    def _pobj(prep):
        for c in prep.children:
            if c.dep_ == "pobj":
                return c
        return None

    # -- one sentence -------------------------------------------------------------------

    def _sentence(self, sent) -> list[tuple[str, str, str, float]]:
        out: list[tuple[str, str, str, float]] = []
        n_words = sum(1 for t in sent if not t.is_punct)

        def emit(subj, label, obj_tok, prior, *, inverted=False, hedges=(), sub=None, factor=1.0):
            if obj_tok is None or self._negated(obj_tok):
                return
            heads = [obj_tok]
            if label in _SPLITTABLE:
                heads += list(obj_tok.conjuncts)
            for k, head in enumerate(heads):
                obj = self._np(head, "object")
                if obj is None:
                    continue
                s, o = (obj, subj) if inverted else (subj, obj)
                if s.lower() == o.lower():
                    continue
                f = factor * (0.9 if k else 1.0)
                if label == "raises" and lx.EXCEPTION_RE.search(o):
                    f *= 1.1
                out.append((s, label, o, lx.score(prior, s, o, hedges=hedges, subordinate=sub,
                                                  sentence_words=n_words, factor=f)))

        for verb in sent:
            if verb.pos_ not in ("VERB", "AUX") or self._negated(verb):
                continue
            if verb.dep_ == "relcl":
                continue  # the subject is a relative pronoun: not resolved
            subj_tok = next((c for c in verb.children if c.dep_ in SUBJ_DEPS), None)
            if subj_tok is None:
                continue  # imperative ("Return the ...") or no explicit subject
            subj = self._np(subj_tok, "subject")
            if subj is None:
                continue
            hedges = [c.lower_ for c in verb.children
                      if c.dep_ in ("aux", "advmod") and c.lower_ in lx.HEDGES]
            sub = None
            if verb.dep_ == "advcl":
                marks = {c.lower_ for c in verb.children if c.dep_ == "mark"}
                if marks & lx.HYPOTHETICAL:
                    sub = "hypothetical"
                elif marks & lx.SUBORDINATORS:
                    sub = "subordinate"
            kw = {"hedges": hedges, "sub": sub}
            lemma = verb.lemma_.lower()
            passive = any(c.dep_ == "auxpass" for c in verb.children) or subj_tok.dep_ == "nsubjpass"

            if lemma == "be" and not passive:
                self._copula(verb, subj_tok, subj, emit, kw)
            elif passive:
                advs = {c.lower_ for c in verb.children if c.dep_ == "advmod"}
                for child in verb.children:
                    if child.dep_ in ("agent", "prep"):
                        rule = lx.PASSIVE.get((lemma, child.lower_))
                        if rule:
                            _pp, label, inverted, prior = rule
                            emit(subj, label, self._pobj(child), prior, inverted=inverted, **kw)
                    elif child.dep_ == "oprd" and lemma == "call" and advs & lx.CALLED_ADVERBS:
                        label, inverted, prior = lx.CALLED_RULE
                        emit(subj, label, child, prior, inverted=inverted, **kw)
            else:
                for child in verb.children:
                    if child.dep_ == "dobj":
                        if verb.tag_ == "VBD" and lemma in lx.ACTIVE_PAST:
                            label, inverted, prior = lx.ACTIVE_PAST_RULE
                            emit(subj, label, child, prior, inverted=inverted, **kw)
                        elif lemma in lx.ACTIVE and " " not in lemma:
                            label, inverted, prior = lx.ACTIVE[lemma]
                            emit(subj, label, child, prior, inverted=inverted, **kw)
                    elif child.dep_ == "prep":
                        rule = lx.ACTIVE.get(f"{lemma} {child.lower_}")
                        if rule:
                            label, inverted, prior = rule
                            emit(subj, label, self._pobj(child), prior, inverted=inverted, **kw)

        for tok in sent:
            if tok.dep_ == "appos" and tok.i > tok.head.i:
                det = next((c.lower_ for c in tok.children if c.dep_ == "det"), None)
                if det in ("a", "an", "the"):
                    head = self._np(tok.head, "subject")
                    if head and lx.name_like(head):
                        prior = lx.PRIOR_APPOSITION_DEFINITE if det == "the" else lx.PRIOR_APPOSITION_INDEFINITE
                        emit(head, "is_a", tok, prior)
            elif tok.dep_ == "acl" and tok.lemma_.lower() == "know":
                prep = next((c for c in tok.children if c.dep_ == "prep" and c.lower_ == "as"), None)
                head = self._np(tok.head, "subject")
                if prep is not None and head:
                    emit(head, "alias_of", self._pobj(prep), lx.PRIOR_ALIAS_APPOSITION, inverted=True)
        return out

    def _copula(self, verb, subj_tok, subj, emit, kw) -> None:
        attr = next((c for c in verb.children if c.dep_ == "attr"), None)
        acomp = next((c for c in verb.children if c.dep_ == "acomp"), None)
        if attr is not None:
            det = next((c.lower_ for c in attr.children if c.dep_ == "det"), None)
            if det == "no":
                return
            preps = [c for c in attr.children if c.dep_ == "prep"]
            noun = attr.lemma_.lower()
            compound = " ".join([*(c.lower_ for c in attr.children if c.dep_ == "compound"), noun])
            for prep in preps:
                p = prep.lower_
                rule = lx.COPULA_NOUNS.get((compound, p)) or lx.COPULA_NOUNS.get((noun, p))
                if rule:
                    label, inverted, prior = rule
                    emit(subj, label, self._pobj(prep), prior, inverted=inverted, **kw)
                    return
                if noun in lx.TAXONOMIC_NOUNS and p == "of" and det in ("a", "an"):
                    emit(subj, "is_a", self._pobj(prep), lx.PRIOR_IS_A_TAXONOMIC, **kw)
                    return
                if noun == "one" and p == "of":
                    emit(subj, "member_of", self._pobj(prep), lx.COPULA_PHRASES["one of the"][1], **kw)
                    return
                if noun == "same" and p == "as":
                    emit(subj, "equivalent_to", self._pobj(prep), lx.COPULA_PHRASES["the same as"][1], **kw)
                    return
            if any(c.lower_ == "default" and c.dep_ in ("amod", "compound") for c in subj_tok.children):
                target = self._np(subj_tok, "subject")
                if target and target.lower().startswith("default "):
                    target = target[len("default "):]
                if target:
                    emit(target, "defaults_to", attr, lx.PRIOR_DEFAULT_COPULA, **kw)
                return
            if det in ("a", "an", "the"):
                prior = lx.PRIOR_IS_A_DEFINITE if det == "the" else lx.PRIOR_IS_A_INDEFINITE
                emit(subj, "is_a", attr, prior, **kw)
        elif acomp is not None:
            for prep in (c for c in acomp.children if c.dep_ == "prep"):
                phrase = f"{acomp.lower_} {prep.lower_}"
                if phrase in lx.COPULA_PHRASES:
                    label, prior = lx.COPULA_PHRASES[phrase]
                    emit(subj, label, self._pobj(prep), prior, **kw)
                    return

    def extract(self, text: str) -> list[Triple]:
        # The prose sentences of the simple backend are what gets parsed: the same code and
        # doctest filtering, evidence spans that agree across backends, and no text over
        # spaCy's max_length. Markup characters become spaces, so offsets do not move.
        spans = [(a, b) for a, b in sentences.sentence_spans(text) if b - a <= sentences.MAX_SENTENCE_CHARS]
        pieces = (text[a:b].translate(_MARKUP_TO_SPACE) for a, b in spans)
        best: dict[tuple[str, str, str, int], Triple] = {}
        for (a, _b), doc in zip(spans, self.nlp.pipe(pieces, batch_size=64)):
            for sent in doc.sents:
                raw = sent.text
                if not raw.strip() or raw.rstrip().endswith("?"):
                    continue
                lead = len(raw) - len(raw.lstrip())
                start = a + sent.start_char + lead
                end = a + sent.start_char + len(raw.rstrip())
                found = self._sentence(sent)
                acro = rules.SentenceRules(text[start:end], self.max_arg_words)
                for i, tok in enumerate(acro.low):
                    if tok == "(" and i + 2 < acro.n and acro.low[i + 2] == ")":
                        acro.acronym(i)
                for subj, label, obj, conf in [*found, *acro.out]:
                    key = (subj, label, obj, start)
                    if key not in best or best[key].confidence < conf:
                        best[key] = Triple(subj, label, obj, conf, start, end)
        return sorted(best.values(), key=lambda t: t.start)
