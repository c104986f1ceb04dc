"""The GNN passage ranker: model (``model.py``) and the per-query subgraphs it reads (``data.py``)."""
