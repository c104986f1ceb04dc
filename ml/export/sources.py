"""From checkpoint versions in the store to what the export needs: model sources, sample texts, lineage, evaluation.

Everything is read from the exact versions the store manifests record (``resolve_models``,
``sample_texts``, ``walk_lineage``, ``bundle_evaluation``): DESIGN.md, "Module notes".
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import polars as pl

from ml.export.to_onnx import ModelSource, read_pooling
from ml.paths import ASSET_NAME_RE
from ml.store import ArtifactStore, StoredVersion

# component -> (checkpoint asset, model kind)
COMPONENTS = {
    "lm": ("lora_adapter", "causal_lm"),
    "embedding": ("embedding_checkpoint", "embedding"),
    "relation": ("relation_checkpoint", "classifier"),
    "gnn": ("gnn_checkpoint", "ranker"),
    "ner": ("ner_checkpoint", "token_classifier"),
    "dpo": ("dpo_adapter", "causal_lm"),  # the DPO-aligned LM: model/ holds the merged weights
}
CHECKPOINT_ASSETS = tuple(a for a, _ in COMPONENTS.values())

# kind -> where its real sample texts live, nearest first: (asset, file glob, columns, cut). Sources
# are used in this order until ``samples`` texts are found (small corpora have tiny val splits).
SAMPLE_SOURCES: dict[str, list[tuple[str, str, tuple[str, ...], bool]]] = {
    "causal_lm": [("sft_dataset", "val.parquet", ("prompt",), False),
                  ("tokenized_corpus", "val", (), True)],  # the LM's own validation documents
    "embedding": [("embedding_dataset", "val.parquet", ("anchor", "positive"), False)],
    "classifier": [("relation_dataset", "val.parquet", ("text",), False)],
    "token_classifier": [("ner_dataset", "val.parquet", ("text",), False),
                         ("ner_dataset", "train.parquet", ("text",), False)],
    "ranker": [("gnn_dataset", "val.parquet", ("query",), False)],  # the ranker's samples: ml/gnn/export.py
}
FALLBACK_SOURCE = ("cleaned_chunks", "chunks/*.parquet", ("text",), True)
CORPUS_DOC_TOKENS = 256  # tokens of a tokenized_corpus document decoded into a sample text


class SourceError(ValueError):
    pass


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise SourceError(f"{what}: expected directory {path} (see ml/FORMATS.md, Checkpoints)")
    return path


def resolve_models(store: ArtifactStore, versions: Mapping[str, str]) -> list[ModelSource]:
    """Model sources for every component, from ``{checkpoint asset: data version}``."""
    out = []
    for name, (asset, kind) in COMPONENTS.items():
        if asset not in versions:
            raise SourceError(f"no version given for {asset} (component {name!r})")
        ver = store.open(asset, versions[asset])  # verified against its manifest before any read
        prov: dict[str, Any] = {"asset": asset, "data_version": ver.data_version}
        tokenizer_dir = _need_dir(ver.path / "tokenizer", f"{asset}@{ver.data_version}")
        adapter_dir = None
        if name == "lm" and (ver.path / "adapter").is_dir():
            base_version = ver.manifest.get("upstream", {}).get("lm_checkpoint")
            if not base_version:
                raise SourceError(f"lora_adapter@{ver.data_version}: its manifest records no upstream lm_checkpoint, "
                                  "so the base model to merge the adapter into is unknown")
            base = store.open("lm_checkpoint", base_version)
            model_dir = _need_dir(base.path / "model", f"lm_checkpoint@{base_version}")
            adapter_dir = ver.path / "adapter"
            prov["base"] = {"asset": "lm_checkpoint", "data_version": base_version}
            prov["merge"] = "peft LoRA adapter merged into the base (merge_and_unload)"
        else:
            model_dir = _need_dir(ver.path / "model", f"{asset}@{ver.data_version}")
            if name == "lm":
                prov["merge"] = "full fine-tuning (no adapter)"
            elif name == "dpo":
                prov["merge"] = "DPO LoRA merged into the merged SFT model at save time (model/ = full weights)"
        pooling = read_pooling(ver.path / "pooling.json") if kind == "embedding" else None
        graph = _graph_inputs(store, ver, versions) if kind == "ranker" else None
        out.append(ModelSource(name=name, kind=kind, model_dir=model_dir, tokenizer_dir=tokenizer_dir,
                               adapter_dir=adapter_dir, pooling=pooling, provenance=prov, graph=graph))
    return out


def bundle_sources(store: ArtifactStore, versions: Mapping[str, str], samples: int) -> list[ModelSource]:
    """``resolve_models`` with each model's sample texts and its checkpoint metrics filled in."""
    from ml.export.metrics import checkpoint_metrics

    models = resolve_models(store, versions)
    for m in models:
        asset, version = m.provenance["asset"], m.provenance["data_version"]
        m.texts, m.cut_samples, m.provenance["samples"] = sample_texts(store, asset, version, m.kind, samples,
                                                                       m.tokenizer_dir)
        m.metrics = checkpoint_metrics(store, asset, version)
    return models


def _graph_inputs(store: ArtifactStore, ver: StoredVersion, versions: Mapping[str, str]) -> dict[str, Any]:
    """The gnn_dataset and embedding_checkpoint versions a gnn_checkpoint was trained on (its node
    features come from that embedding model, so the bundle's embedding must be the same version)."""
    import json

    up = ver.manifest.get("upstream", {})
    for need in ("gnn_dataset", "embedding_checkpoint"):
        if not up.get(need) or not store.has_version(need, up[need]):
            raise SourceError(f"gnn_checkpoint@{ver.data_version}: upstream {need} {up.get(need)!r} is not in the store")
    if versions.get("embedding_checkpoint") not in (None, up["embedding_checkpoint"]):
        raise SourceError(f"gnn_checkpoint@{ver.data_version} was trained on embedding_checkpoint@"
                          f"{up['embedding_checkpoint']} features, but the bundle exports embedding_checkpoint@"
                          f"{versions['embedding_checkpoint']}: retrain gnn_checkpoint on it first")
    conf = json.loads((ver.path / "model" / "gnn_config.json").read_text("utf-8"))
    return {"dataset_dir": store.open("gnn_dataset", up["gnn_dataset"]).path,
            "embedding_dir": store.open("embedding_checkpoint", up["embedding_checkpoint"]).path,
            "feature_max_len": int(conf["features"]["max_len"])}


def _upstream_versions(store: ArtifactStore, asset: str, version: str) -> Iterator[StoredVersion]:
    """The stored versions upstream of asset@version, nearest first (the start included); versions
    missing from the store are skipped."""
    seen = {(asset, version)}
    queue = deque([(asset, version)])
    while queue:
        a, v = queue.popleft()
        if not store.has_version(a, v):
            continue
        ver = store.get(a, v)
        yield ver
        for ua, uv in sorted(ver.manifest.get("upstream", {}).items()):
            if ASSET_NAME_RE.match(ua) and (ua, uv) not in seen:
                seen.add((ua, uv))
                queue.append((ua, uv))


def _pick(texts: list[str], n: int) -> list[str]:
    """n distinct non-blank texts spread evenly over the list (deterministic)."""
    uniq = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
    if len(uniq) <= n:
        return uniq
    return [uniq[i] for i in np.linspace(0, len(uniq) - 1, n).round().astype(int)]


def _read_texts(version_dir: Path, pattern: str, columns: tuple[str, ...], n: int, tokenizer_dir: Path | None) -> list[str]:
    if columns:  # parquet columns; several columns interleave (anchor, positive, anchor, ...)
        files = sorted(version_dir.glob(pattern))
        if not files:
            return []
        frame = pl.read_parquet(files, columns=list(columns))
        return _pick([t for row in frame.iter_rows() for t in row], n)
    # a tokenized_corpus split: documents decoded with the model's tokenizer
    if tokenizer_dir is None or not (version_dir / pattern).is_dir():
        return []
    from ml.export.to_onnx import load_tokenizer
    from ml.tokenized_corpus import TokenShards

    shards = TokenShards(version_dir, pattern)
    tok = load_tokenizer(tokenizer_dir)
    picks = sorted(set(np.linspace(0, shards.num_docs - 1, min(n, shards.num_docs)).round().astype(int).tolist())) \
        if shards.num_docs else []
    return _pick([tok.decode(shards.doc(i)[:CORPUS_DOC_TOKENS].tolist()) for i in picks], n)


def sample_texts(store: ArtifactStore, asset: str, version: str, kind: str, n: int,
                 tokenizer_dir: Path | None = None) -> tuple[list[str], list[bool], list[dict[str, Any]]]:
    """(texts, cut per text, where they came from) for the model asset@version: up to n real texts,
    from the nearest validation data in its lineage first, topped up from the next sources."""
    nodes = list(_upstream_versions(store, asset, version))
    texts: list[str] = []
    cuts: list[bool] = []
    where: list[dict[str, Any]] = []
    for src_asset, pattern, columns, cut in [*SAMPLE_SOURCES[kind], FALLBACK_SOURCE]:
        for ver in nodes:
            if len(texts) >= n:
                break
            if ver.asset != src_asset:
                continue
            got = [t for t in _read_texts(store.check(ver).path, pattern, columns, n, tokenizer_dir) if t not in texts]
            got = got[: n - len(texts)]
            if got:
                texts += got
                cuts += [cut] * len(got)
                where.append({"asset": ver.asset, "data_version": ver.data_version, "files": pattern,
                              "columns": list(columns), "split": "val" if pattern.startswith("val") else "all",
                              "count": len(got)})
    if not texts:
        wanted = [s[0] for s in SAMPLE_SOURCES[kind]] + [FALLBACK_SOURCE[0]]
        raise SourceError(f"no sample texts upstream of {asset}@{version}: looked for {wanted} in its lineage")
    return texts, cuts, where


def walk_lineage(store: ArtifactStore, upstream: Mapping[str, str]) -> dict[str, Any]:
    """Every version upstream of ``upstream`` (asset -> version), from the store manifests.

    Returns {"nodes": [{asset, data_version, code_version, fingerprint, upstream}], "raw_docs": [versions],
    "landing": {"landing:<file>": sha256 prefix}}. A version missing from the store is an error: the bundle
    would claim a lineage it cannot show. Run ids and timestamps are run facts, not lineage content: the
    catalog (``lineage trace``) has them.
    """
    nodes: dict[tuple[str, str], dict[str, Any]] = {}
    landing: dict[str, str] = {}
    stack = sorted(upstream.items())
    while stack:
        asset, version = stack.pop()
        if not ASSET_NAME_RE.match(asset):
            landing[asset] = version
            continue
        if (asset, version) in nodes:
            continue
        if not store.has_version(asset, version):
            raise SourceError(f"lineage: {asset}@{version} is recorded upstream but missing from the store at {store.root}")
        m = store.get(asset, version).manifest
        nodes[(asset, version)] = {
            "asset": asset, "data_version": version, "code_version": m.get("code_version"),
            "fingerprint": m.get("fingerprint"),
            "upstream": dict(sorted(m.get("upstream", {}).items())),
        }
        stack.extend(sorted(m.get("upstream", {}).items()))
    ordered = [nodes[k] for k in sorted(nodes)]
    return {
        "nodes": ordered,
        "raw_docs": sorted(v for (a, v) in nodes if a == "raw_docs"),
        "landing": dict(sorted(landing.items())),
    }


def bundle_evaluation(evaluation: StoredVersion, upstream: Mapping[str, str],
                      warn: Callable[[str], None] = print) -> dict | None:
    """The held-out test figures of exactly these checkpoints (``upstream``: asset -> version), by model, from
    a model_evaluation version; None (and a warning) when it measured other model versions."""
    from ml.evaluation import read_results

    measured = evaluation.manifest.get("upstream") or {}
    stale = {a: v for a, v in upstream.items() if a in measured and measured[a] != v}
    if stale or not set(measured) & set(upstream):
        warn(f"model_evaluation@{evaluation.data_version} measured other model versions ({stale}); the "
             "bundle manifest carries no evaluation")
        return None
    models: dict[str, dict] = {}
    for r in read_results(evaluation.path).iter_rows(named=True):
        models.setdefault(r["asset"], {"dataset": r["dataset"], "split": "test", "metrics": {}})["metrics"][
            r["metric"]] = {"value": r["value"], "n": r["n"]}
    return {"asset": "model_evaluation", "data_version": evaluation.data_version, "models": models}
