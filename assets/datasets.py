"""Training datasets: embedding, relation, sft, gnn and ner datasets (train/val by document)."""

from pathlib import Path
from typing import Callable

import dagster as dg
import polars as pl

import ml.datasets as datasets_pkg
import ml.datasets.embedding as embedding
import ml.datasets.gnn as gnn
import ml.datasets.mixing as mixing
import ml.datasets.ner as ner
import ml.datasets.relation as relation
import ml.datasets.sft as sft
import ml.datasets.splits as splits
from assets.config import MixedSplitConfig
from assets.versioned import materialize_versioned, preview_table, upstream_version
from ml.cleaned_chunks.pipeline import read_chunks, read_clean_docs
from ml.fsutil import source_digest
from ml.relation_triples.parts import read_triples
from ml.store import BuildResult, StoredVersion
import ml.tokenizer as tokenization
from resources import ArtifactStoreResource, CatalogResource
from resources.dagster_config import dagster_config_from_dataclass

SHARED = (datasets_pkg.__file__, splits.__file__, mixing.__file__, __file__)


DatasetConfig = MixedSplitConfig  # the split every dataset shares; each dataset adds its own fields


def _read_doc_sources(chunks: StoredVersion) -> pl.DataFrame:
    """doc_id and source of the cleaned documents: all the relation and SFT builders use (not the text)."""
    return read_clean_docs(chunks.path).select("doc_id", "source").collect()


def _build(build_fn: Callable[[], tuple[dict, dict]], extra: Callable[[Path], None] = lambda out: None):
    def build(out: Path) -> BuildResult:
        parts, stats = build_fn()
        rows = datasets_pkg.write_splits(out, parts)
        extra(out)
        return BuildResult(stats=stats, rows=rows)
    return build


def _metadata(columns: list[str], group_prefix: str) -> Callable[[StoredVersion], dict]:
    """Counts, skip reasons, doc shares and a preview; train_counts = the train.<group_prefix>* stats."""
    def metadata(version: StoredVersion) -> dict:
        s = version.stats
        skipped = {k.split(".", 1)[1]: int(v) for k, v in s.items() if k.startswith("skipped.") and v}
        head = f"train.{group_prefix}"
        per_group = {k[len(head):]: int(v) for k, v in s.items() if k.startswith(head) and v}
        return {
            "train_rows": dg.MetadataValue.int(int(s.get("train.examples", 0))),
            "val_rows": dg.MetadataValue.int(int(s.get("val.examples", 0))),
            "test_rows": dg.MetadataValue.int(int(s.get("test.examples", 0))),
            "train_docs": dg.MetadataValue.int(int(s.get("train.docs", 0))),
            "val_docs": dg.MetadataValue.int(int(s.get("val.docs", 0))),
            "test_docs": dg.MetadataValue.int(int(s.get("test.docs", 0))),
            "skipped": dg.MetadataValue.json(skipped),
            "train_counts": dg.MetadataValue.json(per_group),
            "doc_shares": dg.MetadataValue.json({k.split(".", 2)[2]: round(v, 4) for k, v in s.items()
                                                 if k.startswith("mix.share.")}),
            "preview": preview_table(pl.read_parquet(version.path / "train.parquet", columns=columns, n_rows=6),
                                     max_chars=120),
        }
    return metadata


EmbeddingDatasetConfig = dagster_config_from_dataclass(
    embedding.EmbeddingConfig, "EmbeddingDatasetConfig", base=DatasetConfig,
    only=("title_pairs_per_doc", "adjacent_pairs_per_doc", "min_chars", "max_chars"))


@dg.asset(
    group_name="datasets",
    deps=["cleaned_chunks"],
    code_version=source_digest(embedding.__file__, *SHARED),
    kinds={"polars"},
    description="(anchor, positive) pairs for contrastive training: title/first sentence with a chunk, and "
    "adjacent chunks, all within one document; train/val by document.",
)
def embedding_dataset(context: dg.AssetExecutionContext, config: EmbeddingDatasetConfig,
                      store: ArtifactStoreResource, catalog: CatalogResource) -> dg.MaterializeResult:
    st = store.get()
    chunks = upstream_version(context, st, "cleaned_chunks")
    cfg = embedding.EmbeddingConfig(
        seed=config.seed, val_ratio=config.val_ratio, test_ratio=config.test_ratio, title_pairs_per_doc=config.title_pairs_per_doc,
        adjacent_pairs_per_doc=config.adjacent_pairs_per_doc, min_chars=config.min_chars,
        max_chars=config.max_chars, mix_weights=tuple(sorted(config.mix_weights.items())))
    build = _build(lambda: embedding.build_embedding(
        read_chunks(chunks.path).collect(), read_clean_docs(chunks.path).collect(), cfg))
    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(),
        upstream={"cleaned_chunks": chunks.data_version}, build=build,
        metadata=_metadata(["anchor", "positive", "kind"], "kind."),
    )


RelationDatasetConfig = dagster_config_from_dataclass(
    relation.RelationConfig, "RelationDatasetConfig", base=DatasetConfig,
    only=("no_relation_ratio", "min_confidence", "max_chars"),
    descriptions={"no_relation_ratio": "no_relation examples = ratio x the average count of a relation label "
                                       "(per split)."})


@dg.asset(
    group_name="datasets",
    deps=["relation_triples", "cleaned_chunks"],
    code_version=source_digest(relation.__file__, tokenization.__file__, *SHARED),  # markers from ml/tokenizer
    kinds={"polars"},
    description="Entity-marked evidence sentences (<e1>subject</e1> ... <e2>object</e2>) -> relation label, "
    "with a balanced no_relation class; labels.json fixes the label ids.",
)
def relation_dataset(context: dg.AssetExecutionContext, config: RelationDatasetConfig,
                     store: ArtifactStoreResource, catalog: CatalogResource) -> dg.MaterializeResult:
    st = store.get()
    chunks = upstream_version(context, st, "cleaned_chunks")
    triples = upstream_version(context, st, "relation_triples")
    cfg = relation.RelationConfig(
        seed=config.seed, val_ratio=config.val_ratio, test_ratio=config.test_ratio, no_relation_ratio=config.no_relation_ratio,
        min_confidence=config.min_confidence, max_chars=config.max_chars,
        mix_weights=tuple(sorted(config.mix_weights.items())))
    build = _build(lambda: relation.build_relation(
        read_triples(triples.path).collect(), read_chunks(chunks.path).select("chunk_id", "doc_id", "text").collect(),
        _read_doc_sources(chunks), cfg), extra=relation.write_labels)
    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(),
        upstream={"cleaned_chunks": chunks.data_version, "relation_triples": triples.data_version},
        build=build, metadata=_metadata(["text", "label"], "label."),
    )


SftDatasetConfig = dagster_config_from_dataclass(
    sft.SftConfig, "SftDatasetConfig", base=DatasetConfig,
    only=("system_prompt", "max_objects", "max_len", "min_confidence"))


@dg.asset(
    group_name="datasets",
    deps=["relation_triples", "cleaned_chunks", "tokenizer"],
    code_version=source_digest(sft.__file__, tokenization.__file__, *SHARED),
    kinds={"polars"},
    description="Chat-template instruction/response pairs from relation triples (question about a subject's "
    "relation -> object + evidence); encode with ml.datasets.sft.encode_sft to mask the prompt tokens.",
)
def sft_dataset(context: dg.AssetExecutionContext, config: SftDatasetConfig,
                store: ArtifactStoreResource, catalog: CatalogResource) -> dg.MaterializeResult:
    st = store.get()
    chunks = upstream_version(context, st, "cleaned_chunks")
    triples = upstream_version(context, st, "relation_triples")
    tok = upstream_version(context, st, "tokenizer")
    cfg = sft.SftConfig(
        seed=config.seed, val_ratio=config.val_ratio, test_ratio=config.test_ratio, system_prompt=config.system_prompt,
        max_objects=config.max_objects, max_len=config.max_len, min_confidence=config.min_confidence,
        mix_weights=tuple(sorted(config.mix_weights.items())))
    build = _build(lambda: sft.build_sft(
        read_triples(triples.path).collect(), read_chunks(chunks.path).select("chunk_id", "doc_id").collect(),
        _read_doc_sources(chunks), cfg, tokenizer=tokenization.load_tokenizer(tok.path)))
    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(),
        upstream={"cleaned_chunks": chunks.data_version, "relation_triples": triples.data_version,
                  "tokenizer": tok.data_version},
        build=build, metadata=_metadata(["prompt", "response"], "relation."),
    )


GnnDatasetConfig = dagster_config_from_dataclass(
    gnn.GnnConfig, "GnnDatasetConfig", base=DatasetConfig,
    only=("negatives", "min_confidence", "max_chunk_chars"))


@dg.asset(
    group_name="datasets",
    deps=["relation_triples", "cleaned_chunks"],
    code_version=source_digest(gnn.__file__, *SHARED),
    kinds={"polars"},
    description="Chunk/entity graph (relation edges typed and weighted by confidence, chunk-entity mentions; "
    "graph/nodes.parquet, graph/edges.parquet) and ranking examples: a query from a triple (object held out), "
    "its chunk as the positive, hard negatives from the same neighbourhood; train/val by document.",
)
def gnn_dataset(context: dg.AssetExecutionContext, config: GnnDatasetConfig,
                store: ArtifactStoreResource, catalog: CatalogResource) -> dg.MaterializeResult:
    st = store.get()
    chunks = upstream_version(context, st, "cleaned_chunks")
    triples = upstream_version(context, st, "relation_triples")
    cfg = gnn.GnnConfig(seed=config.seed, val_ratio=config.val_ratio, test_ratio=config.test_ratio, negatives=config.negatives,
                        min_confidence=config.min_confidence, max_chunk_chars=config.max_chunk_chars,
                        mix_weights=tuple(sorted(config.mix_weights.items())))

    def build(out: Path) -> BuildResult:
        parts, nodes, edges, stats = gnn.build_gnn(
            read_triples(triples.path).collect(), read_chunks(chunks.path).select("chunk_id", "doc_id", "text").collect(),
            _read_doc_sources(chunks), cfg)
        gnn.write_graph(out, nodes, edges)
        return BuildResult(stats=stats, rows=datasets_pkg.write_splits(out, parts))

    def metadata(version: StoredVersion) -> dict:
        s = version.stats
        md = _metadata(["query", "positive", "hard_negatives"], "relation.")(version)
        md["graph"] = dg.MetadataValue.json({k: s[k] for k in sorted(s) if k.startswith(("nodes", "edges.", "degree."))
                                             and not k.startswith("edges.relation_type.")})
        return md

    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(),
        upstream={"cleaned_chunks": chunks.data_version, "relation_triples": triples.data_version},
        build=build, metadata=metadata,
    )


NerDatasetConfig = dagster_config_from_dataclass(
    ner.NerConfig, "NerDatasetConfig", base=DatasetConfig,
    only=("max_len", "min_confidence"))


@dg.asset(
    group_name="datasets",
    deps=["relation_triples", "cleaned_chunks", "tokenizer"],
    code_version=source_digest(ner.__file__, relation.__file__, tokenization.__file__, *SHARED),
    kinds={"polars"},
    description="BIO-tagged evidence sentences for token classification: entity spans and types weakly "
    "labelled from the relation extractor's subjects and objects, aligned to the tokenizer's offsets; "
    "labels.json fixes the tag ids.",
)
def ner_dataset(context: dg.AssetExecutionContext, config: NerDatasetConfig,
                store: ArtifactStoreResource, catalog: CatalogResource) -> dg.MaterializeResult:
    st = store.get()
    chunks = upstream_version(context, st, "cleaned_chunks")
    triples = upstream_version(context, st, "relation_triples")
    tok = upstream_version(context, st, "tokenizer")
    cfg = ner.NerConfig(seed=config.seed, val_ratio=config.val_ratio, test_ratio=config.test_ratio, max_len=config.max_len,
                        min_confidence=config.min_confidence, mix_weights=tuple(sorted(config.mix_weights.items())))
    build = _build(lambda: ner.build_ner(
        read_triples(triples.path).collect(), read_chunks(chunks.path).select("chunk_id", "doc_id").collect(),
        _read_doc_sources(chunks), cfg, tokenization.load_tokenizer(tok.path)), extra=ner.write_labels)
    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(),
        upstream={"cleaned_chunks": chunks.data_version, "relation_triples": triples.data_version,
                  "tokenizer": tok.data_version},
        build=build, metadata=_metadata(["text"], "entity."),
    )
