"""The phrase -> label tables and the confidence formula ``score()``, shared by both backends.

Keys are lemmas (what spaCy gives; ``simple`` inflects them itself), so ``simple`` and ``spacy``
agree on what "X is written by Y" means and differ only in how they find the arguments. The
formula and its factors are in the README (relation_triples, "Confidence"); priors rank patterns,
they are not calibrated probabilities.
"""

from __future__ import annotations

import re

# --- the verb-phrase tables ------------------------------------------------------------

# Active verbs: "X <verb> Y" -> (label, inverted, prior). A phrase may carry a particle
# ("default to"); inverted means the triple is (Y, label, X).
ACTIVE: dict[str, tuple[str, bool, float]] = {
    "use": ("uses", False, 0.70),
    "rely on": ("uses", False, 0.70),
    "return": ("returns", False, 0.80),
    "contain": ("contains", False, 0.72),
    "include": ("contains", False, 0.60),
    "consist of": ("contains", False, 0.75),
    "comprise": ("contains", False, 0.70),
    "have": ("has", False, 0.55),
    "raise": ("raises", False, 0.80),
    "throw": ("raises", False, 0.75),
    "default to": ("defaults_to", False, 0.85),
    "inherit from": ("subclass_of", False, 0.85),
    "subclass": ("subclass_of", False, 0.75),
    "provide": ("provides", False, 0.65),
    "implement": ("provides", False, 0.65),
    "define": ("provides", False, 0.60),
    "offer": ("provides", False, 0.60),
    "expose": ("provides", False, 0.60),
    "support": ("provides", False, 0.55),
    "belong to": ("member_of", False, 0.70),
    "accept": ("accepts", False, 0.65),
    "take": ("accepts", False, 0.55),
    "expect": ("accepts", False, 0.50),
}

# Active verbs recognised in the past tense only: "Guido van Rossum created Python" ->
# (Python, created_by, Guido van Rossum). Present tense "X creates Y" in docs means a
# function making an object, not authorship, so it is left alone.
ACTIVE_PAST: dict[str, str] = {
    "create": "created", "write": "wrote", "develop": "developed", "design": "designed",
    "invent": "invented", "found": "founded", "author": "authored", "build": "built",
}
ACTIVE_PAST_RULE = ("created_by", True, 0.70)

# Passive "X is <participle> <prep> Y": (lemma, prep) -> (participle, label, inverted, prior).
PASSIVE: dict[tuple[str, str], tuple[str, str, bool, float]] = {
    ("create", "by"): ("created", "created_by", False, 0.85),
    ("write", "by"): ("written", "created_by", False, 0.85),
    ("develop", "by"): ("developed", "created_by", False, 0.85),
    ("design", "by"): ("designed", "created_by", False, 0.85),
    ("invent", "by"): ("invented", "created_by", False, 0.85),
    ("author", "by"): ("authored", "created_by", False, 0.85),
    ("build", "by"): ("built", "created_by", False, 0.75),
    ("maintain", "by"): ("maintained", "created_by", False, 0.70),
    ("found", "by"): ("founded", "created_by", False, 0.85),
    ("found", "in"): ("founded", "founded_in", False, 0.90),
    ("establish", "in"): ("established", "founded_in", False, 0.85),
    ("bear", "in"): ("born", "born_in", False, 0.90),
    ("locate", "in"): ("located", "located_in", False, 0.85),
    ("situate", "in"): ("situated", "located_in", False, 0.85),
    ("headquarter", "in"): ("headquartered", "located_in", False, 0.85),
    ("base", "in"): ("based", "located_in", False, 0.70),
    ("define", "in"): ("defined", "located_in", False, 0.60),
    ("use", "by"): ("used", "uses", True, 0.65),
    ("raise", "by"): ("raised", "raises", True, 0.75),
    ("throw", "by"): ("thrown", "raises", True, 0.75),
    ("contain", "in"): ("contained", "contains", True, 0.65),
    ("include", "in"): ("included", "contains", True, 0.60),
    ("compose", "of"): ("composed", "contains", False, 0.75),
    ("know", "as"): ("known", "alias_of", True, 0.85),
}
# "X is also called Y" / "sometimes called": "called" names an alias only with one of these
# adverbs (plain "X is called when ..." means invoked).
CALLED_ADVERBS = frozenset({"also", "sometimes", "commonly", "often", "usually", "generally",
                            "frequently", "variously", "informally", "formally", "now"})
CALLED_RULE = ("alias_of", True, 0.80)

# Copula + adjective/fixed phrase: "X is <phrase> Y" -> (label, prior).
COPULA_PHRASES: dict[str, tuple[str, float]] = {
    "equivalent to": ("equivalent_to", 0.80),
    "identical to": ("equivalent_to", 0.80),
    "the same as": ("equivalent_to", 0.70),
    "equal to": ("equivalent_to", 0.65),
    "synonymous with": ("equivalent_to", 0.75),
    "part of": ("part_of", 0.80),
    "short for": ("alias_of", 0.80),
    "one of the": ("member_of", 0.60),
}

# Copula + determiner + relational noun + preposition: "X is a subclass of Y".
# (noun, prep) -> (label, inverted, prior). Taxonomic nouns (kind/type/...) give is_a with
# the object after "of", and only with an indefinite article ("X is the type of Y" is not).
COPULA_NOUNS: dict[tuple[str, str], tuple[str, bool, float]] = {
    ("subclass", "of"): ("subclass_of", False, 0.90),
    ("subtype", "of"): ("subclass_of", False, 0.85),
    ("derived class", "of"): ("subclass_of", False, 0.85),
    ("superclass", "of"): ("subclass_of", True, 0.85),
    ("base class", "of"): ("subclass_of", True, 0.80),
    ("base class", "for"): ("subclass_of", True, 0.75),
    ("instance", "of"): ("instance_of", False, 0.85),
    ("part", "of"): ("part_of", False, 0.80),
    ("component", "of"): ("part_of", False, 0.75),
    ("member", "of"): ("member_of", False, 0.80),
    ("element", "of"): ("member_of", False, 0.65),
    ("alias", "for"): ("alias_of", False, 0.85),
    ("alias", "of"): ("alias_of", False, 0.85),
    ("synonym", "for"): ("alias_of", False, 0.80),
    ("synonym", "of"): ("alias_of", False, 0.80),
    ("abbreviation", "for"): ("alias_of", False, 0.80),
    ("abbreviation", "of"): ("alias_of", False, 0.80),
    ("shorthand", "for"): ("alias_of", False, 0.75),
    ("nickname", "for"): ("alias_of", False, 0.75),
}
TAXONOMIC_NOUNS = frozenset({"kind", "type", "sort", "form", "variant", "variety", "example",
                             "special case", "specialization", "subset", "flavor", "flavour"})
# Adjectives allowed between the article and the relational noun ("a direct subclass of").
RELATIONAL_MODIFIERS = frozenset({"direct", "indirect", "concrete", "abstract", "special",
                                  "proper", "strict", "virtual", "thin", "simple", "new",
                                  "private", "public", "built-in", "builtin", "integral",
                                  "core", "essential", "important", "key", "main", "major",
                                  "full", "real", "true", "distinct", "separate", "common"})

PRIOR_IS_A_INDEFINITE = 0.75   # "X is a Y"
PRIOR_IS_A_DEFINITE = 0.55     # "X is the Y": often identity or role, not class
PRIOR_IS_A_TAXONOMIC = 0.75    # "X is a kind of Y"
PRIOR_APPOSITION_INDEFINITE = 0.60   # "X, a Y, ..."
PRIOR_APPOSITION_DEFINITE = 0.50     # "X, the Y, ..."
PRIOR_ALIAS_APPOSITION = 0.85        # "X, also known as Y" / "X (also called Y)"
PRIOR_ACRONYM = 0.80                 # "Simple API for XML (SAX)"
PRIOR_DEFAULT_COPULA = 0.75          # "The default mode is 'rb'"

# --- confidence --------------------------------------------------------------------------

HEDGES: dict[str, float] = {
    "may": 0.60, "might": 0.55, "could": 0.65, "would": 0.75, "can": 0.80, "should": 0.80,
    "usually": 0.75, "often": 0.75, "typically": 0.80, "generally": 0.80, "normally": 0.80,
    "mostly": 0.75, "sometimes": 0.60, "occasionally": 0.60, "frequently": 0.80,
    "probably": 0.60, "possibly": 0.55, "perhaps": 0.55, "maybe": 0.55, "likely": 0.70,
    "presumably": 0.60, "apparently": 0.65, "reportedly": 0.70, "allegedly": 0.50,
    "supposedly": 0.55, "arguably": 0.60, "roughly": 0.80, "approximately": 0.85,
    "essentially": 0.85, "basically": 0.85, "seemingly": 0.60,
}
NEGATIONS = frozenset({"not", "never", "no", "n't", "cannot", "neither", "nor", "none",
                       "nothing", "nobody", "nowhere", "without", "hardly", "barely",
                       "isn't", "aren't", "wasn't", "weren't", "doesn't", "don't", "didn't",
                       "can't", "won't", "wouldn't", "shouldn't", "couldn't", "mustn't",
                       "hasn't", "haven't", "hadn't", "mayn't", "needn't"})
HYPOTHETICAL = frozenset({"if", "unless", "whether", "otherwise", "suppose", "supposing",
                          "assuming", "provided", "iff"})
SUBORDINATORS = frozenset({"when", "whenever", "while", "because", "since", "although",
                           "though", "after", "before", "once", "until", "as", "whereas",
                           "where", "wherever"}) | HYPOTHETICAL
SUBORDINATE: dict[str, float] = {"hypothetical": 0.35, "subordinate": 0.75}
CONDITIONAL_TAIL = 0.90
ARG_DECAY = 0.93
ARG_FREE_WORDS = 4


def score(prior: float, subject: str, obj: str, *, hedges=(), subordinate: str | None = None,
          conditional_tail: bool = False, sentence_words: int = 0, factor: float = 1.0) -> float:
    """The confidence formula of the module docstring."""
    c = prior * factor
    for h in set(hedges):
        c *= HEDGES.get(h, 1.0)
    if subordinate:
        c *= SUBORDINATE[subordinate]
    if conditional_tail:
        c *= CONDITIONAL_TAIL
    for arg in (subject, obj):
        c *= ARG_DECAY ** max(0, len(arg.split()) - ARG_FREE_WORDS)
    if sentence_words > 60:
        c *= 0.70
    elif sentence_words > 40:
        c *= 0.85
    return round(min(1.0, max(0.0, c)), 4)


# --- arguments ---------------------------------------------------------------------------

DETERMINERS = frozenset({"a", "an", "the"})
QUANTIFIERS_STRIP = frozenset({"each", "every", "all", "any"})   # dropped from subjects
PRONOUNS = frozenset({
    "it", "its", "itself", "this", "that", "these", "those", "they", "them", "their",
    "theirs", "themselves", "he", "him", "his", "himself", "she", "her", "hers", "herself",
    "we", "us", "our", "ours", "you", "your", "yours", "i", "me", "my", "mine", "one",
    "ones", "there", "here", "who", "whom", "whose", "which", "what", "whatever",
    "whichever", "someone", "somebody", "something", "anyone", "anybody", "anything",
    "everyone", "everybody", "everything", "nothing", "none", "nobody", "such", "same",
    "former", "latter", "both", "either", "neither", "some", "several", "many", "few",
    "most", "other", "others", "another", "each", "all", "any", "no",
})
PREPOSITIONS = frozenset({
    "of", "in", "on", "at", "by", "for", "from", "with", "without", "into", "onto", "to",
    "via", "per", "under", "over", "after", "before", "during", "through", "throughout",
    "within", "between", "among", "against", "about", "like", "upon", "across", "behind",
    "beyond", "toward", "towards", "around", "near", "inside", "outside", "than", "as",
})
STOPWORDS = DETERMINERS | PRONOUNS | PREPOSITIONS | frozenset({
    "and", "or", "but", "nor", "so", "yet", "not", "is", "are", "was", "were", "be", "been",
    "being", "do", "does", "did", "has", "have", "had", "can", "could", "will", "would",
    "shall", "should", "may", "might", "must", "if", "then", "else", "when", "also",
    "only", "just", "very", "more", "less", "following", "above", "below", "case", "way",
    "e.g", "i.e", "etc", "default", "true", "false",
})
# Object heads that carry no information on their own ("X is the following:").
EMPTY_OBJECTS = frozenset({"following", "case", "same", "one", "ones", "other", "others",
                           "former", "latter", "rest", "default", "way", "thing", "things",
                           "above", "below", "opposite", "reverse", "latter one", "example",
                           "instance", "part", "member", "subclass", "alias", "number"})
# Code, not names: assignments, braces, shell pipes, spaced operators, comments.
FORBIDDEN_ARG_CHARS = re.compile(r"[={}|<>;\\]|>>>|::|->|\.\.\.|\s[-%*+/&^]\s|(?<![A-Za-z])#")

_ROLE_RE = re.compile(r":[\w-]+(?::[\w-]+)?:(?=`)")
_EMPH_RE = re.compile(r"(?<![\w*])\*{1,2}([^*\s](?:[^*]*?[^*\s])?)\*{1,2}(?![\w*])")
_WS_RE = re.compile(r"\s+")
_EDGE_QUOTES = "\"'“”‘’`"
_TRAIL_PUNCT = ".,;:!?"


def strip_markup(text: str) -> str:
    """reST/Markdown inline markup off: roles, backticks, *emphasis*; curly quotes made
    straight; whitespace collapsed."""
    text = _ROLE_RE.sub("", text)
    text = text.replace("`", "")
    text = _EMPH_RE.sub(r"\1", text)
    text = text.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'")
    return _WS_RE.sub(" ", text).strip()


def _balanced(text: str) -> bool:
    return text.count("(") == text.count(")") and text.count("[") == text.count("]")


def clean_arg(text: str, *, strip_quantifiers: bool = False) -> str:
    """Surface form of an argument: quotes and trailing punctuation off, leading
    determiners off (and each/every/all/any for subjects), whitespace collapsed."""
    text = _WS_RE.sub(" ", text).strip()
    changed = True
    while changed and text:
        changed = False
        words = text.split(" ")
        first = words[0].lower()
        if len(words) > 1 and (first in DETERMINERS or (strip_quantifiers and first in QUANTIFIERS_STRIP)):
            text = " ".join(words[1:])
            changed = True
        stripped = text.strip(_TRAIL_PUNCT + " ")
        if stripped != text:
            text, changed = stripped, True
        if len(text) >= 2 and text[0] in _EDGE_QUOTES and text[-1] in _EDGE_QUOTES:
            text, changed = text[1:-1].strip(), True
        elif text and text[0] in _EDGE_QUOTES and text.count(text[0]) == 1:
            text, changed = text[1:].strip(), True
        elif text and text[-1] in _EDGE_QUOTES and text.count(text[-1]) == 1 and text[-1] != "'":
            text, changed = text[:-1].strip(), True
        elif text.endswith("'") and text.count("'") == 1 and not text.lower().endswith("s'"):
            text, changed = text[:-1].strip(), True
    # Quotes around words inside the argument: the pydoc topics quote every literal.
    text = text.replace('"', "")
    return _WS_RE.sub(" ", text).strip()


def arg_ok(arg: str, max_words: int, *, role: str) -> bool:
    """An argument worth keeping: 1..max_words words, some letters or digits, not only
    stop words, not a pronoun, no code punctuation, balanced brackets."""
    if not arg or not any(ch.isalnum() for ch in arg):
        return False
    words = arg.split()
    if len(words) > max_words:
        return False
    low = [w.lower().strip(_EDGE_QUOTES + _TRAIL_PUNCT) for w in words]
    if all(w in STOPWORDS or not w for w in low):
        return False
    if low[0] in PRONOUNS or low[0] in NEGATIONS or (low[0] in PREPOSITIONS and len(low) > 1):
        return False  # pronoun, negation, or a prepositional phrase rather than a noun phrase
    if low[-1] in PREPOSITIONS or low[-1] in DETERMINERS or low[-1] in {"and", "or"}:
        return False
    if role == "object" and " ".join(low) in EMPTY_OBJECTS:
        return False
    if FORBIDDEN_ARG_CHARS.search(arg) or not _balanced(arg):
        return False
    return True


def name_like(arg: str) -> bool:
    """Looks like a name or a code identifier (capitalised, or with _ . ( ) in it)."""
    return bool(arg) and (arg[0].isupper() or arg[0].isdigit() or any(c in arg for c in "_.()"))


EXCEPTION_RE = re.compile(r"(?:Error|Exception|Warning|Exit|Interrupt|Iteration|Failure)\b")
