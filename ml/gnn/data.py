"""Per-query subgraphs of a gnn_dataset version, node features from an embedding_checkpoint, collation.

The subgraph of one example: its candidate chunks (positive first, then the negatives), the entities
they mention, the mention edges between them and the relation edges among those entities -- only
edges of the splits the example may see (train: train edges; val: train + val edges, see
ml/datasets/gnn.py) -- each edge also reversed (reverse flag set). Node and query texts are embedded
once with the frozen embedding model (``models.encode``, mean pooling + L2).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from ml.datasets.gnn import EDGE_TYPES, MENTIONS, read_graph

EDGE_DIM = len(EDGE_TYPES) + 2  # one-hot type, reverse flag, confidence
VISIBLE = {"train": ("train",), "val": ("train", "val"), "test": ("train", "test")}  # test: model_evaluation


def edge_features(types: list[str], weights: np.ndarray, reverse: bool) -> np.ndarray:
    idx = {t: i for i, t in enumerate(EDGE_TYPES)}
    a = np.zeros((len(types), EDGE_DIM), dtype=np.float32)
    a[np.arange(len(types)), [idx[t] for t in types]] = 1.0
    a[:, -2] = float(reverse)
    a[:, -1] = weights
    return a


class GraphData:
    """The graph of one gnn_dataset version with embedded node texts; ``examples(split)`` -> items."""

    def __init__(self, dataset_dir: Path, encode, splits=("train", "val")):
        self.dir = Path(dataset_dir)
        nodes, edges = read_graph(self.dir)
        self.frames = {s: pl.read_parquet(self.dir / f"{s}.parquet") for s in splits}
        self.node_of = dict(zip(nodes.filter(pl.col("kind") == "chunk")["key"], nodes.filter(pl.col("kind") == "chunk")["node"]))
        self.mentions: dict[str, dict[int, list[tuple[int, float]]]] = {}
        self.relations: dict[str, dict[int, list[tuple[int, str, float]]]] = {}
        for split, visible in ((k, v) for k, v in VISIBLE.items() if k in splits):
            e = edges.filter(pl.col("split").is_in(list(visible)))
            men, rel = defaultdict(list), defaultdict(list)
            for s, d, t, w in e.select("src", "dst", "type", "weight").iter_rows():
                (men[s].append((d, w)) if t == MENTIONS else rel[s].append((d, t, w)))
            self.mentions[split], self.relations[split] = men, rel
        # embed only the nodes some subgraph uses, and the queries
        used: set[int] = set()
        self.items: dict[str, list[dict[str, Any]]] = {}
        for split, frame in self.frames.items():
            self.items[split] = [self._subgraph(split, r) for r in frame.iter_rows(named=True)]
            for it in self.items[split]:
                used.update(it["nodes"].tolist())
        order = sorted(used)
        self.row_of = {n: i for i, n in enumerate(order)}
        texts = nodes["text"].to_list()
        self.x = encode([texts[n] for n in order]) if order else torch.zeros(0, 1)
        queries = [q for s in self.frames for q in self.frames[s]["query"].to_list()]
        self.q = encode(queries) if queries else torch.zeros(0, self.x.shape[-1])
        offset = 0
        for split in self.frames:
            for i, it in enumerate(self.items[split]):
                it["x_rows"] = np.array([self.row_of[n] for n in it["nodes"]], dtype=np.int64)
                it["q_row"] = offset + i
            offset += len(self.items[split])

    def _subgraph(self, split: str, row: dict) -> dict[str, Any]:
        cands = [self.node_of[c] for c in [row["positive"], *row["negatives"]]]
        nodes = list(dict.fromkeys(cands))
        if len(nodes) != len(cands):
            raise ValueError(f"gnn_dataset example {row['query']!r} lists a candidate twice")
        src, dst, types, weights = [], [], [], []
        for c in cands:
            for e, w in self.mentions[split].get(c, []):
                if e not in nodes:
                    nodes.append(e)
                src.append(c), dst.append(e), types.append(MENTIONS), weights.append(w)
        ents = set(nodes[len(cands):])
        for s in sorted(ents):
            for d, t, w in self.relations[split].get(s, []):
                if d in ents:
                    src.append(s), dst.append(d), types.append(t), weights.append(w)
        local = {n: i for i, n in enumerate(nodes)}
        s_l, d_l = [local[n] for n in src], [local[n] for n in dst]
        w = np.asarray(weights, dtype=np.float32)
        edge_index = np.array([s_l + d_l, d_l + s_l], dtype=np.int64).reshape(2, -1)
        edge_attr = np.concatenate([edge_features(types, w, False), edge_features(types, w, True)]) \
            if types else np.zeros((0, EDGE_DIM), dtype=np.float32)
        return {"nodes": np.array(nodes, dtype=np.int64), "edge_index": edge_index, "edge_attr": edge_attr,
                "candidates": np.arange(len(cands), dtype=np.int64)}


def collate(x: torch.Tensor, q: torch.Tensor):
    """items -> one batched graph (the GraphRanker inputs, positive at candidate 0)."""
    def fn(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        offs, xs, eis, eas, ex, cands = 0, [], [], [], [], []
        for b, it in enumerate(items):
            xs.append(it["x_rows"])
            eis.append(it["edge_index"] + offs)
            eas.append(it["edge_attr"])
            ex.append(np.full(len(it["nodes"]), b, dtype=np.int64))
            cands.append(it["candidates"] + offs)
            offs += len(it["nodes"])
        return {"x": x[torch.from_numpy(np.concatenate(xs))],
                "edge_index": torch.from_numpy(np.concatenate(eis, axis=1)),
                "edge_attr": torch.from_numpy(np.concatenate(eas)),
                "node_example": torch.from_numpy(np.concatenate(ex)),
                "query": q[torch.tensor([it["q_row"] for it in items], dtype=torch.long)],
                "candidates": torch.from_numpy(np.stack(cands))}
    return fn


def inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    from ml.gnn.model import INPUT_NAMES

    return tuple(batch[k] for k in INPUT_NAMES)


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """1-based rank of candidate 0 (the positive) per row; ties count against it."""
    return 1 + (scores[:, 1:] >= scores[:, :1]).sum(1)


def baseline_scores(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cosine of the query and each candidate chunk in the embedding model alone (no graph)."""
    cand_x = batch["x"][batch["candidates"]]  # [B, K, D]
    return (cand_x * batch["query"].unsqueeze(1)).sum(-1)


def ranking_metrics(r: torch.Tensor, k: int = 10) -> dict[str, float]:
    r = r.double()
    return {"mrr": float((1.0 / r).mean()),
            f"ndcg_at_{k}": float(torch.where(r <= k, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r)).mean()),
            "hit_at_1": float((r == 1).double().mean())}
