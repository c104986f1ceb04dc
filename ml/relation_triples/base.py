"""Core types of relation extraction: the label set, ``Triple``, the ``Extractor`` protocol
and the registry of backends.

A backend turns the text of one chunk into ``Triple`` objects. Every triple carries one
label of ``RELATIONS`` (the documented, closed label set: backends map each verb phrase
they recognise onto it through the shared tables of ``lexicon.py``), a confidence in
[0, 1] and the character span ``[start, end)`` of the sentence that supports it, as
offsets into the chunk text.

Backends are looked up by name. Two are built in: ``simple`` (rules over sentences, no
dependency, always available) and ``spacy`` (dependency parses, needs spaCy and an
English model; its factory fails with an install hint when they are missing). Both are
imported lazily, so importing this module costs nothing and never needs spaCy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

# label -> one-line description. Direction matters: read "<subject> <label> <object>".
RELATIONS: dict[str, str] = {
    "is_a": "subject is a kind of / an example of object (hypernym): 'X is a Y', 'X, a Y, ...'",
    "subclass_of": "subject is a subclass or subtype of object: 'X is a subclass of Y', 'X inherits from Y'",
    "instance_of": "subject is an instance (object) of the class or type object: 'X is an instance of Y'",
    "part_of": "subject is a part or component of object: 'X is part of Y', 'X is a component of Y'",
    "member_of": "subject belongs to the group or collection object: 'X is a member of Y', 'X belongs to Y'",
    "founded_in": "subject (organisation, project) was founded in the time or place object",
    "born_in": "subject (person) was born in the place or time object",
    "located_in": "subject is located or defined in object (place, module, file): 'X is located in Y'",
    "created_by": "subject was created, written, developed or designed by object: 'X was written by Y'",
    "uses": "subject uses or relies on object: 'X uses Y', 'Y is used by X'",
    "returns": "subject (function, method, call) returns object: 'X returns Y'",
    "contains": "subject contains, includes or consists of object: 'X contains Y'",
    "has": "subject has (possesses, carries) object as an attribute or feature: 'X has a Y'",
    "raises": "subject raises or throws the exception object: 'X raises Y', 'Y is raised by X'",
    "defaults_to": "subject (parameter, option, setting) defaults to the value object: 'X defaults to Y'",
    "alias_of": "subject is another name for object (alias, synonym, acronym): 'Y, also known as X'",
    "equivalent_to": "subject is equivalent to / the same as object: 'X is equivalent to Y'",
    "provides": "subject provides, implements, defines or supports object: 'X provides Y'",
    "accepts": "subject (callable, interface) takes or accepts object as input: 'X accepts Y'",
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Versions end up in cache paths: keep them to a safe alphabet.
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,79}$")


@dataclass(frozen=True)
class Triple:
    """(subject, relation, object) with a confidence and the evidence span [start, end).

    ``start``/``end`` are character offsets into the chunk text the triple came from:
    ``text[start:end]`` is the sentence (or clause) that supports it.
    """

    subject: str
    relation: str
    object: str
    confidence: float
    start: int
    end: int

    def __post_init__(self) -> None:
        if not self.subject or not self.object:
            raise ValueError(f"empty argument in {self!r}")
        if not (isinstance(self.confidence, (int, float)) and math.isfinite(self.confidence)
                and 0.0 <= self.confidence <= 1.0):
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")
        if not (0 <= self.start <= self.end):
            raise ValueError(f"bad evidence span [{self.start}, {self.end})")


@runtime_checkable
class Extractor(Protocol):
    """A relation-extraction backend.

    ``version`` must change whenever the output for some text may change (new rules,
    other options, another model): caches key on ``(name, version)``.
    """

    name: str
    version: str

    def extract(self, text: str) -> list[Triple]: ...


SPACY_HINT = ("parser 'spacy' needs spaCy and an English model: "
              "pip install spacy && python -m spacy download en_core_web_sm")

_REGISTRY: dict[str, Callable[..., Extractor]] = {}


def register(name: str, factory: Callable[..., Extractor]) -> None:
    """Register (or replace) the backend ``name``; ``factory(**options)`` builds one.

    Names are short lowercase identifiers because they become cache directory names.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
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


def check_extractor(extractor: object) -> None:
    """Raise unless extractor has a safe name and version and an extract method."""
    name = getattr(extractor, "name", None)
    version = getattr(extractor, "version", None)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"extractor has an invalid name {name!r}")
    if not isinstance(version, str) or not VERSION_RE.match(version) or ".." in version:
        raise ValueError(f"extractor {name!r} has an invalid version {version!r}")
    if not callable(getattr(extractor, "extract", None)):
        raise TypeError(f"extractor {name!r} has no extract(text) method")


def _simple_factory(**options) -> Extractor:
    from ml.relation_triples.simple import SimpleExtractor

    return SimpleExtractor(**options)


def _spacy_factory(**options) -> Extractor:
    # spacy_backend imports spaCy itself and turns its absence into RuntimeError(SPACY_HINT).
    from ml.relation_triples.spacy_backend import SpacyExtractor

    return SpacyExtractor(**options)


register("simple", _simple_factory)
register("spacy", _spacy_factory)
