"""Every data asset's quality suite, by asset name; each suite lives beside the stage it guards."""

from __future__ import annotations

import ml.cleaned_chunks.quality as cleaned_chunks_quality
import ml.datasets.quality as datasets_quality
import ml.raw_docs_quality as raw_docs_quality
import ml.relation_triples.quality as relation_triples_quality
import ml.tokenized_corpus_quality as tokenized_corpus_quality
from ml.quality.suite import Suite

SUITE_MODULES = (raw_docs_quality, cleaned_chunks_quality, relation_triples_quality, tokenized_corpus_quality,
                 datasets_quality)
SUITES: dict[str, Suite] = {
    "raw_docs": raw_docs_quality.SUITE,
    "cleaned_chunks": cleaned_chunks_quality.SUITE,
    "relation_triples": relation_triples_quality.SUITE,
    "tokenized_corpus": tokenized_corpus_quality.SUITE,
    **datasets_quality.SUITES,
}
