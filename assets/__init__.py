"""The asset graph: one module per stage, each a thin adapter over ml/."""

from assets.alignment import dpo_adapter, preference_dataset
from assets.curation import cleaned_chunks, relation_triples
from assets.evaluation import model_evaluation
from assets.datasets import embedding_dataset, gnn_dataset, ner_dataset, relation_dataset, sft_dataset
from assets.export import onnx_bundle
from assets.raw_docs import raw_docs
from assets.release import hf_release
from assets.sweeps import model_sweep
from assets.tokenization import tokenized_corpus, tokenizer
from assets.training import (embedding_checkpoint, gnn_checkpoint, lm_checkpoint, lora_adapter, ner_checkpoint,
                              relation_checkpoint)

ALL_ASSETS = [raw_docs, cleaned_chunks, relation_triples, tokenizer, tokenized_corpus,
              embedding_dataset, relation_dataset, sft_dataset, gnn_dataset, ner_dataset, preference_dataset,
              lm_checkpoint, lora_adapter, embedding_checkpoint, relation_checkpoint, gnn_checkpoint, ner_checkpoint,
              dpo_adapter, model_evaluation, onnx_bundle, hf_release, model_sweep]

__all__ = ["ALL_ASSETS", "cleaned_chunks", "embedding_dataset", "raw_docs", "relation_dataset", "relation_triples",
           "sft_dataset", "tokenized_corpus", "tokenizer",
           "lm_checkpoint", "lora_adapter", "embedding_checkpoint", "relation_checkpoint", "onnx_bundle",
           "gnn_dataset", "ner_dataset", "gnn_checkpoint", "ner_checkpoint", "preference_dataset", "dpo_adapter",
           "hf_release", "model_evaluation", "model_sweep"]
