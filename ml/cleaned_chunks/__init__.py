"""cleaned_chunks engine: cleaning, exact + near dedup, quality rules, chunking.

See ``pipeline.curate`` for the order of operations and the decision log.
"""
