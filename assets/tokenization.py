"""Corpus stage, token side: the byte-level BPE ``tokenizer`` and the ``tokenized_corpus`` shards."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

import ml.datasets.mixing as mixing
import ml.datasets.splits as splits
import ml.tokenized_corpus as corpus
import ml.tokenizer as tokenization
from assets.config import MixedSplitConfig, SplitConfig, dagster_config
from assets.versioned import declared_inputs, materialize_versioned, preview_table
from ml.cleaned_chunks.pipeline import read_clean_docs
from ml.fsutil import source_digest
from ml.settings import TokenizedCorpusRules, TokenizerRules
from ml.store import BuildResult, StoredVersion
from resources import ArtifactStoreResource, CatalogResource


class TokenizerConfig(dagster_config(TokenizerRules, "TokenizerSettings", base=SplitConfig,
                                     only=("vocab_size", "min_frequency", "max_token_length", "model_max_length"))):
    def to_ml(self) -> tokenization.TokenizerConfig:
        return tokenization.TokenizerConfig(self.vocab_size, self.min_frequency, self.max_token_length,
                                            self.model_max_length)


def _tokenizer_metadata(version: StoredVersion) -> dict:
    s = version.stats
    tok = tokenization.load_backend(version.path)  # tokenizers only: a cache hit never imports transformers
    sample = "Byte-level BPE keeps every string: naïve café → 😀."
    enc = tok.encode(sample, add_special_tokens=False)
    ids = enc.ids
    cpt = s.get("chars_per_token.val", s.get("chars_per_token.train", 0.0))
    return {
        "vocab_size": int(s["vocab_size"]), "train_docs": int(s["train_docs"]), "val_docs": int(s["val_docs"]),
        "chars_per_token": dg.MetadataValue.float(float(cpt)),
        "special_tokens": dg.MetadataValue.json(tokenization.special_ids()),
        "example": dg.MetadataValue.md(f"`{sample}` → {len(ids)} tokens: "
                                       + " ".join(f"`{t}`" for t in enc.tokens)),
    }


@dg.asset(
    group_name="corpus",
    deps=["cleaned_chunks"],
    code_version=source_digest(tokenization.__file__, splits.__file__, __file__),
    kinds={"huggingface"},
    description="Byte-level BPE tokenizer (HF tokenizers) trained on the train split of the cleaned documents; "
    "tokenizer.json loads as PreTrainedTokenizerFast with the special and role tokens set.",
)
def tokenizer(context: dg.AssetExecutionContext, config: TokenizerConfig,
              store: ArtifactStoreResource, catalog: CatalogResource) -> dg.MaterializeResult:
    st = store.get()
    chunks = declared_inputs(context, st)["cleaned_chunks"]

    def build(out: Path) -> BuildResult:
        texts = splits.texts_by_split(read_clean_docs(chunks.path).select("doc_id", "text").collect(),
                                      config.seed, config.val_ratio, test_ratio=config.test_ratio)
        stats = tokenization.build_tokenizer(texts["train"], texts["val"], out, config.to_ml())
        return BuildResult(stats=stats, rows=int(stats["vocab_size"]))

    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(),
        upstream={"cleaned_chunks": chunks.data_version}, build=build, metadata=_tokenizer_metadata,
    )


TokenizedCorpusConfig = dagster_config(TokenizedCorpusRules, "TokenizedCorpusConfig", base=MixedSplitConfig,
                                       only=("shard_tokens", "batch_docs"))


def _corpus_metadata(version: StoredVersion) -> dict:
    s = version.stats
    shares = {k.split(".", 2)[2]: round(v, 4) for k, v in s.items() if k.startswith("mix.share.")}
    token_shares = {k.split(".", 2)[2]: round(v, 4) for k, v in s.items() if k.startswith("mix.token_share.")}
    preview = pl.read_parquet(version.path / "doc_ids" / "train.parquet", n_rows=5)
    return {
        **{f"{sp}_{what}": dg.MetadataValue.int(int(s.get(f"{sp}.{what}", 0)))
           for sp in corpus.SPLITS for what in ("docs", "tokens", "shards")},
        "dtype": json.loads((version.path / corpus.INDEX).read_text())["dtype"],
        "bytes_total": dg.MetadataValue.int(int(s["bytes"])),
        "doc_shares": dg.MetadataValue.json(shares), "token_shares": dg.MetadataValue.json(token_shares),
        "preview": preview_table(preview),
    }


@dg.asset(
    group_name="corpus",
    deps=["tokenizer", "cleaned_chunks"],
    code_version=source_digest(corpus.__file__, tokenization.__file__, splits.__file__, mixing.__file__, __file__),
    kinds={"numpy"},
    description="Whole cleaned documents encoded with the tokenizer into memory-mappable uint16/uint32 "
    "train/val shards (documents end with <|eos|>), with an offsets index; read with ml.tokenized_corpus.TokenShards.",
)
def tokenized_corpus(context: dg.AssetExecutionContext, config: TokenizedCorpusConfig,
                     store: ArtifactStoreResource, catalog: CatalogResource) -> dg.MaterializeResult:
    st = store.get()
    inputs = declared_inputs(context, st)
    chunks, tok = inputs["cleaned_chunks"], inputs["tokenizer"]
    leak = corpus.split_leak(tok.manifest.get("config", {}), tok.data_version, config.seed, config.val_ratio,
                             config.test_ratio)
    if leak:
        raise dg.Failure(leak)

    def build(out: Path) -> BuildResult:
        docs = read_clean_docs(chunks.path).select("doc_id", "source", "text").collect()
        parts, stats = corpus.corpus_splits(docs, config.seed, config.val_ratio, config.mix_weights,
                                            test_ratio=config.test_ratio)
        stats.update(corpus.build_tokenized_corpus(
            parts, tok.path, out, corpus.CorpusConfig(config.shard_tokens, config.batch_docs),
            mixed_out_docs=int(stats["docs.mixed_out"])))
        return BuildResult(stats=stats, rows=int(stats["tokens"]))

    return materialize_versioned(
        context, store=st, catalog=catalog.get(), config=config.model_dump(),
        upstream={"cleaned_chunks": chunks.data_version, "tokenizer": tok.data_version},
        build=build, metadata=_corpus_metadata,
    )
