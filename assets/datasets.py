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
from assets.versioned import declared_inputs, materialize_versioned, preview_table
from ml.cleaned_chunks.pipeline import read_chunks, read_clean_docs
from ml.fsutil import source_digest
from ml.relation_triples.parts import read_triples
from ml.store import BuildResult, StoredVersion
import ml.tokenizer as tokenization
from resources import ArtifactStoreResource, CatalogResource
from resources.dagster_config import dagster_config_from_dataclass, dataclass_from_config

SHARED = (datasets_pkg.__file__, splits.__file__, mixing.__file__, __file__)


DatasetConfig = MixedSplitConfig  # the split every dataset shares; each dataset adds its own fields


def _materialize_dataset(context: dg.AssetExecutionContext, config: DatasetConfig, store: ArtifactStoreResource,
                         catalog: CatalogResource, settings: type, make: Callable[[dict, object, Path], tuple[dict, dict]],
                         metadata: Callable[[StoredVersion], dict]) -> dg.MaterializeResult:
    """Every dataset's body: the versions of its declared inputs -> ``make(inputs, cfg, out)`` (the ml/
    builder: split parts and stats; files besides the splits written into ``out``) -> one version."""
    st = store.get()
    inputs = declared_inputs(context, st)
    cfg = dataclass_from_config(settings, config)

    def build(out: Path) -> BuildResult:
        parts, stats = make(inputs, cfg, out)
        return BuildResult(stats=stats, rows=datasets_pkg.write_splits(out, parts))

    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(),
        upstream={name: version.data_version for name, version in inputs.items()}, build=build, metadata=metadata)


def _triples_chunks_docs(inputs: dict[str, StoredVersion], *chunk_columns: str) -> tuple[pl.DataFrame, ...]:
    """What the triple-based builders read: the triples, these chunk columns, each document's source."""
    chunks = inputs["cleaned_chunks"].path
    return (read_triples(inputs["relation_triples"].path).collect(), read_chunks(chunks).select(*chunk_columns).collect(),
            read_clean_docs(chunks).select("doc_id", "source").collect())


def _tokenizer(inputs: dict[str, StoredVersion]):
    return tokenization.load_tokenizer(inputs["tokenizer"].path)


def _metadata(columns: list[str], group_prefix: str) -> Callable[[StoredVersion], dict]:
    """Counts, skip reasons, doc shares and a preview; train_counts = the train.<group_prefix>* stats."""
    def metadata(version: StoredVersion) -> dict:
        s = version.stats
        skipped = {k.split(".", 1)[1]: int(v) for k, v in s.items() if k.startswith("skipped.") and v}
        head = f"train.{group_prefix}"
        per_group = {k[len(head):]: int(v) for k, v in s.items() if k.startswith(head) and v}
        return {
            **{f"{split}_{key}": dg.MetadataValue.int(int(s.get(f"{split}.{stat}", 0)))
               for split in ("train", "val", "test") for key, stat in (("rows", "examples"), ("docs", "docs"))},
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
    def make(inputs, cfg, out):
        chunks = inputs["cleaned_chunks"].path
        return embedding.build_embedding(read_chunks(chunks).collect(), read_clean_docs(chunks).collect(), cfg)

    return _materialize_dataset(context, config, store, catalog, embedding.EmbeddingConfig, make,
                                _metadata(["anchor", "positive", "kind"], "kind."))


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
    def make(inputs, cfg, out):
        relation.write_labels(out)
        return relation.build_relation(*_triples_chunks_docs(inputs, "chunk_id", "doc_id", "text"), cfg)

    return _materialize_dataset(context, config, store, catalog, relation.RelationConfig, make,
                                _metadata(["text", "label"], "label."))


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
    def make(inputs, cfg, out):
        return sft.build_sft(*_triples_chunks_docs(inputs, "chunk_id", "doc_id"), cfg, tokenizer=_tokenizer(inputs))

    return _materialize_dataset(context, config, store, catalog, sft.SftConfig, make,
                                _metadata(["prompt", "response"], "relation."))


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
    def make(inputs, cfg, out):
        parts, nodes, edges, stats = gnn.build_gnn(*_triples_chunks_docs(inputs, "chunk_id", "doc_id", "text"), cfg)
        gnn.write_graph(out, nodes, edges)
        return parts, stats

    def metadata(version: StoredVersion) -> dict:
        s = version.stats
        md = _metadata(["query", "positive", "hard_negatives"], "relation.")(version)
        md["graph"] = dg.MetadataValue.json({k: s[k] for k in sorted(s) if k.startswith(("nodes", "edges.", "degree."))
                                             and not k.startswith("edges.relation_type.")})
        return md

    return _materialize_dataset(context, config, store, catalog, gnn.GnnConfig, make, metadata)


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
    def make(inputs, cfg, out):
        ner.write_labels(out)
        return ner.build_ner(*_triples_chunks_docs(inputs, "chunk_id", "doc_id"), cfg, _tokenizer(inputs))

    return _materialize_dataset(context, config, store, catalog, ner.NerConfig, make, _metadata(["text"], "entity."))