"""Backends by name: ``register``, ``available``, ``get_extractor``.

Two are built in: ``simple`` (rules, always available) and ``spacy`` (needs spaCy and an
English model with a parser; building it fails with ``SPACY_HINT`` when they are missing).
Importing this module never imports spaCy.
"""

from __future__ import annotations

from typing import Callable

from ml.relation_triples.base import NAME_RE, Extractor, check_extractor
from ml.relation_triples.simple import SimpleExtractor
from ml.relation_triples.spacy_backend import SpacyExtractor

_REGISTRY: dict[str, Callable[..., Extractor]] = {}


def register(name: str, factory: Callable[..., Extractor]) -> None:
    """Register (or replace) the backend ``name``; ``factory(**options)`` builds one.

    Names are short lowercase identifiers because they become cache directory names.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"invalid extractor name {name!r}: expected [a-z][a-z0-9_-]*, at most 32 chars")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} is not callable")
    _REGISTRY[name] = factory


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_extractor(name: str, **options) -> Extractor:
    """Build the backend ``name`` with ``options``.

    Unknown names raise ``ValueError`` listing the registered ones; a backend whose
    dependencies are missing raises ``RuntimeError`` from its factory.
    """
    try:
        factory = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown extractor {name!r}; available: {', '.join(available())}") from None
    extractor = factory(**options)
    check_extractor(extractor)
    return extractor


register("simple", SimpleExtractor)
register("spacy", SpacyExtractor)
