"""``simple``: rule-based relation extraction over prose sentences, no dependencies.

Sentences come from ``sentences``, tokens from ``tokens``, candidate triples from the rule
engine in ``rules``; per sentence the most confident copy of each triple is kept. The version
(the cache key) is a digest of the source of every module the output depends on, so any edit
to a rule, table or threshold invalidates cached triples.
"""

from __future__ import annotations

from ml.fsutil import digest_json, source_digest
from ml.relation_triples import lexicon, rules, sentences, tokens
from ml.relation_triples.base import Triple

DEFAULT_OPTIONS = {"max_arg_words": 8}
RULES_SOURCES = tuple(m.__file__ for m in (lexicon, sentences, tokens, rules)) + (__file__,)


def rules_digest() -> str:
    """Digest of the rule sources: changes whenever their text does."""
    return source_digest(*RULES_SOURCES)


class SimpleExtractor:
    """The ``simple`` backend: rules over sentences, no external dependency."""

    name = "simple"

    def __init__(self, max_arg_words: int = DEFAULT_OPTIONS["max_arg_words"]):
        if not isinstance(max_arg_words, int) or not 1 <= max_arg_words <= 32:
            raise ValueError(f"max_arg_words must be an int in [1, 32], got {max_arg_words!r}")
        self.max_arg_words = max_arg_words
        options = {"max_arg_words": max_arg_words}
        # Non-default options change the output, so they are part of the cache key.
        digest = rules_digest()
        self.version = digest if options == DEFAULT_OPTIONS else f"{digest}+{digest_json(options, 8)}"

    def __repr__(self) -> str:
        return f"SimpleExtractor(version={self.version!r}, max_arg_words={self.max_arg_words})"

    def extract(self, text: str) -> list[Triple]:
        best: dict[tuple[str, str, str, int], Triple] = {}
        for start, end in sentences.sentence_spans(text):
            if end - start > sentences.MAX_SENTENCE_CHARS:
                continue
            for subj, label, obj, conf in rules.SentenceRules(text[start:end], self.max_arg_words).run():
                key = (subj, label, obj, start)
                if key not in best or best[key].confidence < conf:
                    best[key] = Triple(subj, label, obj, conf, start, end)
        return sorted(best.values(), key=lambda t: t.start)
