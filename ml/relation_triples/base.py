"""Core types of relation extraction: the label set ``RELATIONS``, ``Triple`` and the
``Extractor`` protocol.

A backend turns the text of one chunk into ``Triple`` objects, each with one label of
``RELATIONS`` (the closed label set), a confidence in [0, 1] and the character span
``[start, end)`` of the supporting sentence in the chunk text. Backends are looked up by
name in ``registry``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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

DEFAULT_MIN_CONFIDENCE = 0.3  # the relation_triples stage drops triples below it (its run config)
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
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


def check_extractor(extractor: object) -> None:
    """Raise unless extractor has a safe name and version and an extract method."""
    name = getattr(extractor, "name", None)
    version = getattr(extractor, "version", None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"extractor has an invalid name {name!r}")
    if not isinstance(version, str) or not VERSION_RE.match(version) or ".." in version:
        raise ValueError(f"extractor {name!r} has an invalid version {version!r}")
    if not callable(getattr(extractor, "extract", None)):
        raise TypeError(f"extractor {name!r} has no extract(text) method")
