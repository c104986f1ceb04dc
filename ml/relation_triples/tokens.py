"""Tokens and word classes of the ``simple`` rules.

``tokenize`` strips inline markup (roles, backticks, ``*emphasis*``) and keeps quoted literals
(``"x = 1"``, ``'r'``), dotted names and calls (``os.path.join()``) as single tokens, with
punctuation separate. The word sets say which tokens bound a clause, belong to a verb group,
or may not appear inside a subject.
"""

from __future__ import annotations

import re

from ml.relation_triples import lexicon
from ml.relation_triples.sentences import ABBREVIATIONS

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
AUX_ADVERBS = MODALS | lexicon.NEGATIONS | frozenset(lexicon.HEDGES) | frozenset({
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
}) | lexicon.NEGATIONS
INNER_DETERMINERS = lexicon.DETERMINERS | frozenset({"this", "these", "those", "its", "their",
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
    for phrase, rule in lexicon.ACTIVE.items():
        verb, _, particle = phrase.partition(" ")
        for form, base in ((_inflect_3sg(verb), False), (verb, True)):
            table.setdefault(form, []).append((phrase, particle or None, base, rule))
    for forms in table.values():
        forms.sort(key=lambda f: f[1] is None)  # phrases with a particle first
    return table


ACTIVE_SURFACE = _build_active()
PAST_SURFACE = {past: lemma for lemma, past in lexicon.ACTIVE_PAST.items()}
PARTICIPLES: dict[str, list[tuple[str, str, bool, float]]] = {}
for (_lemma, _prep), (_pp, _label, _inv, _prior) in lexicon.PASSIVE.items():
    PARTICIPLES.setdefault(_pp, []).append((_prep, _label, _inv, _prior))
VERB_FORMS = frozenset(f for f, rules in ACTIVE_SURFACE.items() if any(not r[2] for r in rules))
COPULAS = frozenset({"is", "are", "was", "were", "be", "been"})
SUBJECT_BANNED = SUBJECT_BANNED | VERB_FORMS
OBJ_CUT = (lexicon.PREPOSITIONS - {"of"}) | SUBJECT_BANNED | VERB_FORMS | COPULAS | frozenset({
    "and", "or", "nor", "but", "so", "except", "until", "instead", "rather", "unlike",
    "using", "containing", "having", "called", "named", "given", "passed", "returned",
    "used", "made", "created", "defined", "specified", "described", "representing",
    "indicating", "describing", "specifying", "holding", "based", "such", "also", "only",
    "otherwise", "etc", "etc.", "respectively", "too", "itself", "themselves", "instead",
    "according", "depending", "whereby", "thereby", "wherein", "either", "neither",
})

TRAILING_ADVERBS = frozenset({"just", "only", "also", "too", "even", "still", "again", "instead",
                              "here", "there", "now", "then", "already", "first"})
WH_WORDS = frozenset({"how", "what", "whether", "which", "when", "where", "who", "why", "if"})
CATAPHORIC = frozenset({"following", "above", "below", "next"})


def tokenize(sentence: str) -> list[str]:
    out: list[str] = []
    for tok in _TOKEN_RE.findall(lexicon.strip_markup(sentence)):
        if len(tok) > 1 and tok.endswith(".") and not tok.endswith("..") and tok[0] not in "\"'":
            stem = tok[:-1]
            if stem.lower() in ABBREVIATIONS or stem.lower().rstrip(".") in ABBREVIATIONS:
                out.append(stem)
                continue
            out.extend((stem, "."))
        else:
            out.append(tok)
    return out
