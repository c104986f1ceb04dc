"""The asset graph: one module per stage, each a thin adapter over ml/."""

from assets.raw_docs import raw_docs

ALL_ASSETS = [raw_docs]

__all__ = ["ALL_ASSETS", "raw_docs"]
