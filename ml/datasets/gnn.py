"""GNN dataset: the chunk/entity graph of a relation_triples version and passage-ranking examples.

Every edge carries the split of the document that made it: training subgraphs see train edges only, and
no chunk of a val document is ever a train positive or negative. Graph, examples and negatives:
DESIGN.md, "Module notes"; files: ml/FORMATS.md.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ml.datasets import split_counts
from ml.datasets.mixing import example_shares, plan_docs
from ml.datasets.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO, doc_unit, drop_cross_split_duplicates
from ml.relation_triples.base import RELATIONS

MENTIONS = "mentions"
EDGE_TYPES: list[str] = [*RELATIONS, MENTIONS]
GRAPH_DIR = "graph"
NODE_SCHEMA = {"node": pl.Int32, "kind": pl.String, "key": pl.String, "text": pl.String, "doc_id": pl.String,
               "split": pl.String}
EDGE_SCHEMA = {"src": pl.Int32, "dst": pl.Int32, "type": pl.String, "weight": pl.Float64, "split": pl.String}
SCHEMA = {"query": pl.String, "kind": pl.String, "subject": pl.String, "relation": pl.String, "object": pl.String,
          "positive": pl.String, "negatives": pl.List(pl.String), "hard_negatives": pl.Int32,
          "candidate_doc_ids": pl.List(pl.String), "doc_id": pl.String, "chunk_id": pl.String, "source": pl.String}


@dataclass(frozen=True)
class GnnConfig:
    seed: int = DEFAULT_SEED
    val_ratio: float = DEFAULT_VAL_RATIO
    test_ratio: float = 0.0
    negatives: int = 7
    """Negatives per query (candidates = 1 + negatives); an example that cannot get them all is dropped."""
    min_confidence: float = 0.0
    max_chunk_chars: int = 512
    mix_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {self.negatives}")


def entity_key(name: str) -> str:
    return " ".join(name.split()).lower()


def query_text(subject: str, relation: str) -> str:
    return f"{' '.join(subject.split())} {relation.replace('_', ' ')}"


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else (text[:n].rsplit(None, 1)[0] if " " in text[:n] else text[:n])


def build_graph(triples: pl.DataFrame, chunks: pl.DataFrame, split_of_doc: dict[str, str], cfg: GnnConfig
                ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """(nodes, edges, stats). ``triples`` carry doc_id; ``chunks``: chunk_id, doc_id, text."""
    stats: dict[str, float] = {}
    chunks = chunks.filter(pl.col("doc_id").replace_strict(split_of_doc, default="mixed_out") != "mixed_out")
    chunks = chunks.sort("chunk_id")
    nodes = [{"node": i, "kind": "chunk", "key": c, "text": _clip(t, cfg.max_chunk_chars), "doc_id": d,
              "split": split_of_doc[d]} for i, (c, d, t) in enumerate(chunks.select("chunk_id", "doc_id", "text").iter_rows())]
    chunk_node = {n["key"]: n["node"] for n in nodes}
    entity_node: dict[str, int] = {}
    rel_edges: dict[tuple, float] = {}
    men_edges: dict[tuple, float] = {}
    for t in triples.sort("chunk_id", "evidence_start", "subject", "object").iter_rows(named=True):
        split = split_of_doc.get(t["doc_id"], "mixed_out")
        if split == "mixed_out" or t["chunk_id"] not in chunk_node:
            continue
        ids = []
        for name in (t["subject"], t["object"]):
            k = entity_key(name)
            if k not in entity_node:
                entity_node[k] = len(nodes)
                nodes.append({"node": len(nodes), "kind": "entity", "key": k, "text": " ".join(name.split()),
                              "doc_id": None, "split": None})
            ids.append(entity_node[k])
        w = float(t["confidence"])
        key = (ids[0], ids[1], t["relation"], split)
        rel_edges[key] = max(w, rel_edges.get(key, 0.0))
        for e in ids:
            key = (chunk_node[t["chunk_id"]], e, MENTIONS, split)
            men_edges[key] = max(w, men_edges.get(key, 0.0))
    edges = [{"src": s, "dst": d, "type": r, "weight": w, "split": sp}
             for (s, d, r, sp), w in sorted({**rel_edges, **men_edges}.items())]
    nodes_df = pl.DataFrame(nodes, schema=NODE_SCHEMA)
    edges_df = pl.DataFrame(edges, schema=EDGE_SCHEMA)
    stats.update(graph_stats(nodes_df, edges_df))
    return nodes_df, edges_df, stats


def graph_stats(nodes: pl.DataFrame, edges: pl.DataFrame) -> dict[str, float]:
    """nodes.<kind>, edges.<type group>.<split>, degree distribution (undirected) of both node kinds."""
    stats: dict[str, float] = {"nodes": nodes.height, "edges": edges.height}
    for kind, n in nodes.group_by("kind").len().iter_rows():
        stats[f"nodes.{kind}"] = n
    grouped = edges.with_columns(group=pl.when(pl.col("type") == MENTIONS).then(pl.lit(MENTIONS))
                                 .otherwise(pl.lit("relation")))
    for group, split, n in grouped.group_by("group", "split").len().iter_rows():
        stats[f"edges.{group}.{split}"] = n
    for rel, n in edges.filter(pl.col("type") != MENTIONS).group_by("type").len().iter_rows():
        stats[f"edges.relation_type.{rel}"] = n
    deg = np.zeros(nodes.height, dtype=np.int64)
    if edges.height:
        np.add.at(deg, edges["src"].to_numpy(), 1)
        np.add.at(deg, edges["dst"].to_numpy(), 1)
    kinds = nodes["kind"].to_numpy()
    for kind in ("chunk", "entity"):
        d = deg[kinds == kind]
        if d.size:
            stats[f"degree.{kind}.mean"] = float(d.mean())
            stats[f"degree.{kind}.max"] = float(d.max())
            stats[f"degree.{kind}.isolated"] = float((d == 0).sum())
            for q in (50, 90, 99):
                stats[f"degree.{kind}.p{q}"] = float(np.percentile(d, q))
    return stats


def _examples(triples: pl.DataFrame, nodes: pl.DataFrame, edges: pl.DataFrame, split: str, cfg: GnnConfig,
              stats: dict) -> list[dict]:
    """Ranking examples whose positive and negatives are all chunks of ``split`` documents."""
    chunk_rows = nodes.filter((pl.col("kind") == "chunk") & (pl.col("split") == split))
    in_split = set(chunk_rows["key"].to_list())
    doc_of = dict(zip(chunk_rows["key"], chunk_rows["doc_id"]))
    key_of = dict(zip(nodes["node"].to_list(), nodes["key"].to_list()))
    visible = edges.filter(pl.col("split").is_in(["train", split]))
    chunks_of_entity: dict[str, set[str]] = defaultdict(set)
    neighbours: dict[str, set[str]] = defaultdict(set)
    for s, d, r in visible.select("src", "dst", "type").iter_rows():
        if r == MENTIONS:
            if key_of[s] in in_split:
                chunks_of_entity[key_of[d]].add(key_of[s])
        else:
            neighbours[key_of[s]].add(key_of[d])
            neighbours[key_of[d]].add(key_of[s])
    answers: dict[tuple[str, str], set[str]] = defaultdict(set)
    rows = triples.filter(pl.col("chunk_id").is_in(list(in_split)))
    for c, s, r in rows.select("chunk_id", "subject", "relation").iter_rows():
        answers[(entity_key(s), r)].add(c)
    pool = sorted(in_split, key=lambda c: doc_unit(cfg.seed, c, f"gnn-random-{split}"))
    out, seen = [], set()
    for t in rows.sort(["confidence", "chunk_id", "subject", "object"], descending=[True, False, False, False]) \
            .iter_rows(named=True):
        s, o = entity_key(t["subject"]), entity_key(t["object"])
        q = query_text(t["subject"], t["relation"])
        if (s, t["relation"]) in seen:
            stats["skipped.same_query"] = stats.get("skipped.same_query", 0) + 1
            continue
        seen.add((s, t["relation"]))
        banned = answers[(s, t["relation"])]
        salt = f"gnn-neg-{split}-{q}"
        hard: list[str] = []
        for ring in (chunks_of_entity[s], chunks_of_entity[o],
                     set().union(*(chunks_of_entity[e] for e in sorted(neighbours[s]))) if neighbours[s] else set()):
            for c in sorted(ring - banned - set(hard), key=lambda c: doc_unit(cfg.seed, c, salt)):
                hard.append(c)
        hard = hard[: cfg.negatives]
        negatives = list(hard)
        for c in pool:
            if len(negatives) >= cfg.negatives:
                break
            if c not in banned and c not in negatives:
                negatives.append(c)
        if len(negatives) < cfg.negatives:
            stats["skipped.too_few_chunks"] = stats.get("skipped.too_few_chunks", 0) + 1
            continue
        out.append({"query": q, "kind": "triple", "subject": t["subject"], "relation": t["relation"],
                    "object": t["object"], "positive": t["chunk_id"], "negatives": negatives,
                    "hard_negatives": len(hard),
                    "candidate_doc_ids": [doc_of[t["chunk_id"]], *(doc_of[c] for c in negatives)],
                    "doc_id": t["doc_id"], "chunk_id": t["chunk_id"], "source": t["source"]})
    return out


def build_gnn(triples: pl.DataFrame, chunks: pl.DataFrame, docs: pl.DataFrame, cfg: GnnConfig
              ) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """(splits, nodes, edges, stats); ``chunks``: chunk_id, doc_id, text; ``docs``: doc_id, source."""
    stats: dict[str, float] = {"triples_in": triples.height}
    chunks = chunks.select("chunk_id", "doc_id", "text").join(docs.select("doc_id", "source"), on="doc_id", how="inner")
    t = triples.join(chunks.select("chunk_id", "doc_id", "source"), on="chunk_id", how="left")
    orphan = t["doc_id"].is_null()
    stats["skipped.no_chunk"] = int(orphan.sum())
    t = t.filter(~orphan)
    low = t["confidence"] < cfg.min_confidence
    stats["skipped.low_confidence"] = int(low.sum())
    t = t.filter(~low)
    unknown = ~t["relation"].is_in(RELATIONS)
    stats["skipped.unknown_relation"] = int(unknown.sum())
    t = t.filter(~unknown)
    plan = plan_docs(docs, cfg.seed, cfg.val_ratio, dict(cfg.mix_weights), test_ratio=cfg.test_ratio)
    stats.update(plan.stats)
    split_of_doc = dict(plan.table.select("doc_id", "split").iter_rows())
    stats["skipped.mixed_out"] = int(t["doc_id"].replace_strict(split_of_doc, default="mixed_out")
                                     .eq("mixed_out").sum())
    nodes, edges, gstats = build_graph(t, chunks, split_of_doc, cfg)
    stats.update(gstats)
    out = {split: pl.DataFrame(_examples(t, nodes, edges, split, cfg, stats), schema=SCHEMA)
           for split in ("train", "val", "test")}
    out["val"], stats["skipped.query_in_train"] = drop_cross_split_duplicates(out["train"], out["val"], ["query"])
    out["test"], in_earlier = drop_cross_split_duplicates(pl.concat([out["train"], out["val"]]), out["test"], ["query"])
    stats["skipped.query_in_train"] += in_earlier
    for split, frame in out.items():
        stats[f"{split}.hard_negatives_mean"] = float(frame["hard_negatives"].mean() or 0.0) if frame.height else 0.0
    stats["candidates_per_query"] = 1 + cfg.negatives
    stats.update(split_counts(out, "relation", RELATIONS))
    stats.update(example_shares(out["train"]))
    return out, nodes, edges, stats


def write_graph(out: Path, nodes: pl.DataFrame, edges: pl.DataFrame) -> None:
    d = Path(out) / GRAPH_DIR
    d.mkdir(parents=True, exist_ok=True)
    nodes.write_parquet(d / "nodes.parquet")
    edges.write_parquet(d / "edges.parquet")


def read_graph(version_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    d = Path(version_dir) / GRAPH_DIR
    for f in ("nodes.parquet", "edges.parquet"):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d / f} is missing (gnn_dataset graph)")
    return pl.read_parquet(d / "nodes.parquet"), pl.read_parquet(d / "edges.parquet")
