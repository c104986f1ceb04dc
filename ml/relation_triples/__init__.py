"""Relation triples (subject, relation, object, confidence, evidence span) from text chunks.

    extractor = get_extractor("simple")            # or "spacy" (needs spaCy + a model)
    triples, stats = extract_triples(chunks, extractor, min_confidence=0.3, cache=TripleCache(root, ...))

Which module does what: DESIGN.md, "The parts" and "Module notes".
"""

from ml.relation_triples.base import RELATIONS, Extractor, Triple
from ml.relation_triples.cache import TripleCache, default_cache_root
from ml.relation_triples.extract import TRIPLE_SCHEMA, chunk_digest, extract_triples
from ml.relation_triples.parts import read_triples, triples_files, write_triples
from ml.relation_triples.registry import available, get_extractor, register
from ml.relation_triples.sentences import sentence_spans
from ml.relation_triples.simple import SimpleExtractor
from ml.relation_triples.spacy_backend import SPACY_HINT, SpacyExtractor

__all__ = [
    "RELATIONS",
    "SPACY_HINT",
    "TRIPLE_SCHEMA",
    "Extractor",
    "SimpleExtractor",
    "SpacyExtractor",
    "Triple",
    "TripleCache",
    "available",
    "chunk_digest",
    "default_cache_root",
    "extract_triples",
    "get_extractor",
    "read_triples",
    "register",
    "sentence_spans",
    "triples_files",
    "write_triples",
]
