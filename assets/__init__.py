"""The asset graph: one module per stage, each a thin adapter over ml/."""

from assets.curation import cleaned_chunks, relation_triples
from assets.raw_docs import raw_docs

ALL_ASSETS = [raw_docs, cleaned_chunks, relation_triples]

__all__ = ["ALL_ASSETS", "cleaned_chunks", "raw_docs", "relation_triples"]
