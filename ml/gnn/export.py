"""The GNN ranker's part of the one export path (ml/export/bundle.py calls these for kind ``ranker``).

Samples: real subgraphs of the gnn_dataset the checkpoint was trained on (validation queries first,
topped up with training queries: parity is a numerical check, and the debug corpus has few val
queries), node and query features from the embedding_checkpoint it was trained with, batched into
one graph. The ONNX graph has dynamic nodes, edges, batch and candidates axes.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ml.gnn.model import INPUT_NAMES, OUTPUT_NAME

DYNAMIC_AXES = {"x": {0: "nodes"}, "edge_index": {1: "edges"}, "edge_attr": {0: "edges"}, "node_example": {0: "nodes"},
                "query": {0: "batch"}, "candidates": {0: "batch", 1: "candidates"},
                OUTPUT_NAME: {0: "batch", 1: "candidates"}}


def sample_batch(dataset_dir: Path, embedding_dir: Path, n: int, feature_max_len: int
                 ) -> tuple[dict[str, np.ndarray], list[str], dict[str, int]]:
    """(feeds, query texts, how many came from each split) for up to n queries."""
    from ml.gnn.data import GraphData, collate
    from ml.train.models import encode, load_embedding

    emb, etok = load_embedding(embedding_dir)
    data = GraphData(Path(dataset_dir), lambda texts: encode(emb, etok, texts, max_len=feature_max_len),
                     splits=("val", "train"))
    items, texts, counts = [], [], {}
    for split in ("val", "train"):
        take = data.items[split][: max(0, n - len(items))]
        items += take
        texts += data.frames[split]["query"].to_list()[: len(take)]
        counts[split] = len(take)
    if not items:
        raise ValueError(f"{dataset_dir}: no gnn_dataset example to build parity samples from")
    batch = collate(data.x, data.q)(items)
    return {k: batch[k].numpy() for k in INPUT_NAMES}, texts, counts


def torch_scores(module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(*(torch.from_numpy(feeds[k]) for k in INPUT_NAMES)).float().numpy()


def export_onnx(module, feeds: dict[str, np.ndarray], out_path: Path, opset: int = 17) -> dict[str, Any]:
    """TorchScript export (dynamo=False) traced on the first two sample queries; onnx.checker must pass."""
    import onnx
    import torch

    from ml.gnn.data import collate  # noqa: F401  (the feeds' layout)

    ex = feeds["node_example"]
    keep_nodes = ex < 2
    remap = np.cumsum(keep_nodes) - 1
    ei = feeds["edge_index"]
    keep_edges = keep_nodes[ei[0]] & keep_nodes[ei[1]]
    trace = {"x": feeds["x"][keep_nodes], "edge_index": remap[ei[:, keep_edges]], "edge_attr": feeds["edge_attr"][keep_edges],
             "node_example": ex[keep_nodes], "query": feeds["query"][:2], "candidates": remap[feeds["candidates"][:2]]}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(torch.from_numpy(np.ascontiguousarray(trace[k])) for k in INPUT_NAMES),
                          str(out_path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          dynamic_axes=DYNAMIC_AXES, opset_version=opset, do_constant_folding=True, dynamo=False)
    onnx.checker.check_model(str(out_path), full_check=True)
    return {"opset": opset, "exporter": f"torch.onnx (torchscript) {torch.__version__}",
            "seconds": round(time.perf_counter() - t0, 3), "traced_on": "2 sample queries"}
