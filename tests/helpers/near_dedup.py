"""Text at a chosen near-duplicate similarity, shared by the near-dedup and incremental curation tests:
a synthetic ``vocabulary`` no cleaning rule reacts to, ``edited`` (about as many edits as a target Jaccard
needs), ``noisy_join`` (case and whitespace the definition ignores), and ``jaccard``: the README's
definition written out independently of the stage's hashing."""

import random

from ml.cleaned_chunks.filters import FilterConfig

NO_RULES = FilterConfig(gopher_quality=False, gopher_repetition=False, c4=False)


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = text.lower().split()
    return {tuple(w)} if len(w) < n else {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str) -> float:
    """The documented definition, by hand."""
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def vocabulary(rng: random.Random, size: int = 50_000) -> list[str]:
    # consonant-vowel syllables: no English word the cleaning's line rules look for can appear
    syll = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    vocab: set[str] = set()
    while len(vocab) < size:
        vocab.add("".join(rng.choice(syll) for _ in range(rng.randint(2, 4))))
    return sorted(vocab)


def noisy_join(rng: random.Random, words: list[str]) -> str:
    """Case and whitespace changes that the definition ignores."""
    out = [w.upper() if rng.random() < 0.05 else w.capitalize() if rng.random() < 0.1 else w for w in words]
    return "".join(w + rng.choice((" ",) * 12 + ("  ", "\n", "\t")) for w in out).strip()


def edited(rng: random.Random, words: list[str], vocab: list[str], target: float) -> list[str]:
    """words with about as many edits as a Jaccard of ``target`` needs (substitutions,
    insertions, deletions at random places)."""
    keep = 2 * target / (1 + target)  # share of one side's shingles that must survive
    k = max(1, round(len(words) * (1 - keep ** (1 / 5))))
    out = list(words)
    for _ in range(k):
        j, op = rng.randrange(len(out)), rng.random()
        if op < 0.6:
            out[j] = rng.choice(vocab)
        elif op < 0.8:
            del out[j]
        else:
            out.insert(j, rng.choice(vocab))
    return out
