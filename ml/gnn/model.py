"""GraphRanker: a query-conditioned graph network (GINEConv) that scores candidate chunks.

An untrained ranker ranks like the no-graph baseline (the score starts as the cosine of the embedding
model), so training learns what the graph adds; GINEConv rather than GAT because GAT's graph fails
``onnx.checker`` after INT8 pre-processing. Inputs, layers and the export: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

INPUT_NAMES = ("x", "edge_index", "edge_attr", "node_example", "query", "candidates")
OUTPUT_NAME = "scores"
CONFIG_FILE = "gnn_config.json"
WEIGHTS_FILE = "model.safetensors"


class GraphRanker(nn.Module):
    def __init__(self, feature_dim: int, edge_dim: int, hidden_size: int = 64, num_layers: int = 2,
                 dropout: float = 0.0, cosine_scale: float = 20.0):
        super().__init__()
        from torch_geometric.nn import GINEConv

        self.config = {"feature_dim": feature_dim, "edge_dim": edge_dim, "hidden_size": hidden_size,
                       "num_layers": num_layers, "dropout": dropout, "cosine_scale": cosine_scale}
        self.inp = nn.Linear(3 * feature_dim + 1, hidden_size)
        self.convs = nn.ModuleList(
            GINEConv(nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size)),
                     train_eps=True, edge_dim=edge_dim) for _ in range(num_layers))
        self.skips = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_layers))
        self.out = nn.Linear(hidden_size, 1)
        self.alpha = nn.Parameter(torch.tensor(float(cosine_scale)))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, edge_index, edge_attr, node_example, query, candidates):
        q = query[node_example]
        cos = (x * q).sum(-1, keepdim=True)
        h = torch.relu(self.inp(torch.cat([x, q, x * q, cos], dim=-1)))
        for conv, skip in zip(self.convs, self.skips):
            h = torch.relu(conv(self.drop(h), edge_index, edge_attr) + skip(h))
        node_score = self.out(h).squeeze(-1) + self.alpha * cos.squeeze(-1)
        return node_score[candidates]


def build(cfg: dict[str, Any]) -> GraphRanker:
    return GraphRanker(**cfg)


def save(model: GraphRanker, out_dir: Path, extra: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out_dir / WEIGHTS_FILE))
    (out_dir / CONFIG_FILE).write_text(json.dumps({"model": model.config, **extra}, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")


def load_gnn(dir: Path | str) -> tuple[GraphRanker, dict[str, Any]]:
    """(GraphRanker in eval mode on the CPU, gnn_config.json) of a gnn_checkpoint version (safetensors only)."""
    from safetensors.torch import load_file

    from ml.train.models import require_safetensors

    d = Path(dir)
    mdir = require_safetensors(d / "model" if (d / "model").is_dir() else d)
    conf = json.loads((mdir / CONFIG_FILE).read_text("utf-8"))
    model = build(conf["model"])
    model.load_state_dict(load_file(str(mdir / WEIGHTS_FILE)))
    return model.eval(), conf
