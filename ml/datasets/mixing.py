"""Dataset mixing: a ``source -> weight`` map decides each source's share of the training documents.

Every source needs a weight (0 drops it) and every key must match a source, so a typo is an error, not a
silently wrong mix. The downsampling rule (seeded, the same in every dataset): DESIGN.md, "Module notes".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import polars as pl

from ml.datasets.splits import doc_unit, with_split


def source_stem(source: str) -> str:
    name = source.rsplit("/", 1)[-1]
    for suffix in (".jsonl.gz", ".jsonl", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name.rsplit(".", 1)[0] if "." in name else name


def resolve_weights(sources: list[str], weights: Mapping[str, float]) -> dict[str, float]:
    """Map every source to its weight (normalised to sum 1); ValueError naming the problem otherwise."""
    if not weights:
        return {}
    bad = {k: w for k, w in weights.items() if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)}
    if bad:
        raise ValueError(f"mix_weights must be finite and >= 0; got {bad}")
    resolved: dict[str, float] = {}
    for key, w in weights.items():
        hits = [s for s in sources if s == key] or [s for s in sources if source_stem(s) == key]
        if not hits:
            raise ValueError(f"mix_weights key {key!r} matches no source; sources: {sorted(sources)}")
        if len(hits) > 1:
            raise ValueError(f"mix_weights key {key!r} is ambiguous: it is the stem of {sorted(hits)}; "
                             "use the source path instead")
        if hits[0] in resolved:
            raise ValueError(f"source {hits[0]!r} is given a weight twice in mix_weights")
        resolved[hits[0]] = float(w)
    missing = sorted(set(sources) - set(resolved))
    if missing:
        raise ValueError(f"sources without a weight in mix_weights: {missing}; give each a weight (0 drops it)")
    total = sum(resolved.values())
    if total <= 0:
        raise ValueError("mix_weights are all 0: nothing would be kept")
    return {s: w / total for s, w in resolved.items()}


def plan_mix(doc_counts: Mapping[str, int], shares: Mapping[str, float]) -> dict[str, int]:
    """Documents to keep per source: the largest total whose shares match ``shares``."""
    live = {s: w for s, w in shares.items() if w > 0 and doc_counts.get(s, 0) > 0}
    if not live:
        return {s: 0 for s in doc_counts}
    norm = sum(live.values())
    live = {s: w / norm for s, w in live.items()}
    total = min(doc_counts[s] / w for s, w in live.items())
    return {s: (min(doc_counts[s], int(math.floor(total * live[s] + 0.5))) if s in live else 0)
            for s in doc_counts}


def apply_mix(docs: pl.DataFrame, weights: Mapping[str, float], seed: int
              ) -> tuple[pl.DataFrame, dict[str, float]]:
    """The documents (rows of ``docs``: doc_id, source) the mix keeps, and the stats
    ``mix.share.<source>`` (realised share of the kept documents), ``mix.docs.<source>``,
    ``mix.dropped_docs.<source>`` and ``mix.weight.<source>`` (the normalised weight asked for)."""
    docs = docs.select("doc_id", "source").unique(subset="doc_id", maintain_order=True)
    sources = sorted(docs["source"].unique().to_list())
    shares = resolve_weights(sources, weights)
    counts = dict(docs.group_by("source").len().iter_rows())
    if shares:
        keep_n = plan_mix(counts, shares)
        ranked = docs.with_columns(u=pl.Series([doc_unit(seed, d, "mix") for d in docs["doc_id"]], dtype=pl.Float64))
        ranked = ranked.with_columns(rank=pl.col("u").rank("ordinal").over("source"))
        keep = pl.col("source").replace_strict(keep_n, return_dtype=pl.Int64)
        kept = ranked.filter(pl.col("rank") <= keep).select("doc_id", "source")
    else:
        kept = docs
    kept_counts = dict(kept.group_by("source").len().iter_rows())
    n = max(kept.height, 1)
    stats: dict[str, float] = {"mix.sources": len(sources), "mix.docs_kept": kept.height,
                               "mix.docs_dropped": docs.height - kept.height}
    for s in sources:
        stats[f"mix.docs.{s}"] = kept_counts.get(s, 0)
        stats[f"mix.dropped_docs.{s}"] = counts.get(s, 0) - kept_counts.get(s, 0)
        stats[f"mix.share.{s}"] = kept_counts.get(s, 0) / n
        if shares:
            stats[f"mix.weight.{s}"] = shares[s]
    return kept, stats


def example_shares(train: pl.DataFrame, prefix: str = "mix.example_share") -> dict[str, float]:
    """Share of the train rows (examples, or any weight column summed) from each source."""
    if train.height == 0:
        return {}
    return {f"{prefix}.{s}": n / train.height for s, n in train.group_by("source").len().iter_rows()}


@dataclass
class DocPlan:
    """Where each document goes: ``table`` (doc_id, source, split) with split "train", "val", "test" or
    "mixed_out" (a train document the mix leaves out), and the mixing stats."""

    table: pl.DataFrame
    stats: dict[str, float]

    def assign(self, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
        """Rows of ``frame`` (with doc_id) by the split of their document: train, val, mixed_out."""
        j = frame.join(self.table.select("doc_id", "split"), on="doc_id", how="left", maintain_order="left")
        if j["split"].null_count():
            missing = j.filter(pl.col("split").is_null())["doc_id"].unique().head(3).to_list()
            raise ValueError(f"rows refer to documents that are not in cleaned_chunks' docs, e.g. {missing}")
        return {k: j.filter(pl.col("split") == k).drop("split") for k in ("train", "val", "test", "mixed_out")}


def plan_docs(docs: pl.DataFrame, seed: int, val_ratio: float, weights: Mapping[str, float],
              test_ratio: float = 0.0) -> DocPlan:
    """Split every document (doc_split) and mix the train split (apply_mix). Every dataset plans over
    *all* cleaned documents, so the kept set is the same in every dataset and in tokenized_corpus.
    The held-out splits (val, test) are never mixed."""
    table = with_split(docs.select("doc_id", "source").unique(subset="doc_id", maintain_order=True), seed, val_ratio,
                       test_ratio=test_ratio)
    kept, stats = apply_mix(table.filter(pl.col("split") == "train"), weights, seed)
    out = (pl.col("split") == "train") & ~pl.col("doc_id").is_in(kept["doc_id"].implode())
    table = table.with_columns(split=pl.when(out).then(pl.lit("mixed_out")).otherwise(pl.col("split")))
    counts = dict(table.group_by("split").len().iter_rows())
    stats.update({f"docs.{k}": counts.get(k, 0) for k in ("train", "val", "test", "mixed_out")})
    return DocPlan(table, stats)
