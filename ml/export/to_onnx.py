"""The one export path: a standard HF directory -> a wrapped torch module (per kind) -> ONNX.

Every text model's graph has the same inputs (``input_ids``, ``attention_mask``) and one output; exports
use the TorchScript exporter with eager attention and a padded example row, so no shortcut is baked into
the trace. Kinds, outputs and exporter choices: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

KINDS = ("causal_lm", "embedding", "classifier", "token_classifier", "ranker")
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = {"causal_lm": "logits", "embedding": "embeddings", "classifier": "logits", "token_classifier": "logits",
                "ranker": "scores"}
GRAPH_KINDS = ("ranker",)  # not (input_ids, attention_mask) models: ml/gnn/export.py prepares them
POOLING_MODES = ("mean", "cls")


class ExportError(ValueError):
    """A model directory that cannot be exported, with the reason."""


@dataclass
class ModelSource:
    """One model of a bundle, as standard HF directories (no trainer internals)."""

    name: str  # component name in the bundle: lm, embedding, relation
    kind: str  # one of KINDS
    model_dir: Path  # save_pretrained directory (for a LoRA: the base model)
    tokenizer_dir: Path
    adapter_dir: Path | None = None  # peft adapter merged into model_dir's model
    pooling: dict[str, Any] | None = None  # embedding: {"mode": "mean"|"cls", "normalize": bool}
    texts: list[str] = field(default_factory=list)  # real sample texts for the parity checks
    cut_samples: bool | list[bool] = False  # causal LM on running text: check a next token inside it
    provenance: dict[str, Any] = field(default_factory=dict)  # versions it came from (for the manifest)
    graph: dict[str, Any] | None = None  # ranker: {"dataset_dir", "embedding_dir", "feature_max_len"} for samples
    metrics: dict[str, Any] | None = None  # the checkpoint's validation (and test) metrics, for the manifest

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ExportError(f"model {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        for what, path in (("model", self.model_dir), ("tokenizer", self.tokenizer_dir), ("adapter", self.adapter_dir)):
            if path is not None and not Path(path).is_dir():
                raise ExportError(f"model {self.name!r}: {what} directory {path} does not exist")
        if self.kind == "embedding":
            pooling = dict(self.pooling or {"mode": "mean", "normalize": True})
            if pooling.get("mode") not in POOLING_MODES:
                raise ExportError(f"model {self.name!r}: pooling mode {pooling.get('mode')!r} not in {POOLING_MODES}")
            self.pooling = {"mode": pooling["mode"], "normalize": bool(pooling.get("normalize", True))}


def read_pooling(path: Path) -> dict[str, Any]:
    try:
        pooling = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise ExportError(f"embedding checkpoint has no pooling file {path}") from None
    except ValueError as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(pooling, dict):
        raise ExportError(f"{path} must hold a JSON object like {{\"mode\": \"mean\", \"normalize\": true}}")
    return pooling


# ---- loading --------------------------------------------------------------------------------
def load_tokenizer(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tok.padding_side = "right"  # the LM wrapper finds the last real token from the mask
    return tok


def load_model(src: ModelSource, attn_implementation: str | None = "eager"):
    """The fp32 torch model of ``src`` in eval mode (LoRA merged).

    Eager attention for export and the parity reference; ``None`` gives transformers' default
    (SDPA), which is what the torch latency baseline uses.
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    kw: dict[str, Any] = {"dtype": torch.float32}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    from transformers import AutoModelForTokenClassification

    if src.kind in GRAPH_KINDS:
        from ml.gnn.model import load_gnn

        return load_gnn(src.model_dir)[0]
    loader = {"causal_lm": AutoModelForCausalLM, "embedding": AutoModel,
              "classifier": AutoModelForSequenceClassification,
              "token_classifier": AutoModelForTokenClassification}[src.kind]
    if src.kind == "causal_lm":
        from ml.train.moe import EXPORT_EXPERTS, is_moe
        from transformers import AutoConfig

        if is_moe(AutoConfig.from_pretrained(str(src.model_dir))):
            kw["experts_implementation"] = EXPORT_EXPERTS  # no data-dependent loop over experts in the trace
    try:
        model = loader.from_pretrained(str(src.model_dir), **kw)
    except (OSError, ValueError) as exc:
        raise ExportError(f"model {src.name!r}: cannot load {src.model_dir} as {loader.__name__}: {exc}") from exc
    if src.adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(src.adapter_dir)).merge_and_unload()
        except (OSError, ValueError) as exc:
            raise ExportError(f"model {src.name!r}: cannot apply adapter {src.adapter_dir}: {exc}") from exc
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    return model.float().eval()


# ---- wrappers (one per kind) ------------------------------------------------------------------
def _modules():
    import torch
    from torch import nn

    class CausalLMNextToken(nn.Module):
        """Next-token logits after the last real (mask = 1) position of each row."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
            head = model.get_output_embeddings()
            scaled = any(getattr(model.config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
            # the head on one position per row, not on all of them (b32 x s128 x vocab is most of the work)
            self.split = decoder is not None and decoder is not model and head is not None and not scaled
            self.decoder, self.head = (decoder, head) if self.split else (None, None)

        def forward(self, input_ids, attention_mask):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            last = (attention_mask.to(positions.dtype) * positions).argmax(dim=1)
            rows = torch.arange(input_ids.shape[0], device=input_ids.device)
            if self.split:
                hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]
                return self.head(hidden[rows, last])
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            return logits[rows, last]

    class PooledEmbedding(nn.Module):
        def __init__(self, model, mode: str, normalize: bool):
            super().__init__()
            self.model, self.mode, self.normalize = model, mode, normalize

        def forward(self, input_ids, attention_mask):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
            if self.mode == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
            return pooled

    class Classifier(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    return CausalLMNextToken, PooledEmbedding, Classifier


def wrap(src: ModelSource, model):
    """The exportable module for ``src``: (input_ids, attention_mask) -> one output tensor."""
    lm, emb, clf = _modules()
    if src.kind == "causal_lm":
        return lm(model).eval()
    if src.kind == "embedding":
        return emb(model, src.pooling["mode"], src.pooling["normalize"]).eval()
    if src.kind in GRAPH_KINDS:
        return model.eval()
    return clf(model).eval()  # classifier and token_classifier: the head's logits


def model_info(src: ModelSource, model) -> dict[str, Any]:
    if src.kind in GRAPH_KINDS:
        from ml.gnn.model import INPUT_NAMES as GRAPH_INPUTS

        return {"kind": src.kind, "architecture": type(model).__name__, "vocab_size": 0, "max_positions": 0,
                "parameters": int(sum(p.numel() for p in model.parameters())), "inputs": list(GRAPH_INPUTS),
                "output": OUTPUT_NAMES[src.kind], "config": dict(model.config)}
    cfg = model.config
    info: dict[str, Any] = {
        "kind": src.kind, "architecture": type(model).__name__,
        "vocab_size": int(cfg.vocab_size),
        "max_positions": int(getattr(cfg, "max_position_embeddings", 0) or 0),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "inputs": list(INPUT_NAMES), "output": OUTPUT_NAMES[src.kind],
    }
    if src.kind in ("classifier", "token_classifier"):
        info["id2label"] = {str(k): v for k, v in sorted(cfg.id2label.items())}
    if src.kind == "embedding":
        info["pooling"] = dict(src.pooling)
    return info


# ---- ONNX -------------------------------------------------------------------------------------
def export_onnx(module, out_path: Path, *, kind: str, vocab_size: int, opset: int = 17) -> dict[str, Any]:
    """Export ``module`` to ``out_path`` with dynamic batch and sequence axes; onnx.checker must pass."""
    import onnx
    import torch

    if opset < 17:
        raise ExportError(f"opset {opset} is below 17, the lowest this export supports")
    out = OUTPUT_NAMES[kind]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (2, 16), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0  # a padded row, so the mask's path is traced
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               out: {0: "batch", 1: "sequence"} if kind == "token_classifier" else {0: "batch"}}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # TracerWarnings about python branches on shapes, deprecation notes
        torch.onnx.export(
            module, (ids, mask), str(out_path), input_names=list(INPUT_NAMES), output_names=[out],
            dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(str(out_path), full_check=True)
    return {"opset": opset, "exporter": f"torch.onnx (torchscript) {torch.__version__}",
            "seconds": round(time.perf_counter() - t0, 3)}


# ---- samples and references -------------------------------------------------------------------
def encode_samples(tokenizer, texts: list[str], *, max_length: int, cut: bool | list[bool] = False) -> dict[str, np.ndarray]:
    """Right-padded int64 input_ids / attention_mask for the sample texts.

    ``cut`` (one flag, or one per text; causal-LM samples taken from running text): the text is cut
    at a point between half and all of its tokens (fixed by its position in the list), so the next
    token the parity check compares is one inside real text. Prompts (which end where the answer
    starts) are not cut.
    """
    if not texts:
        raise ExportError("no sample texts to encode")
    cuts = list(cut) if isinstance(cut, (list, tuple)) else [bool(cut)] * len(texts)
    if len(cuts) != len(texts):
        raise ExportError(f"{len(cuts)} cut flags for {len(texts)} sample texts")
    rows = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        if cuts[i] and len(ids) > 2:
            keep = len(ids) // 2 + (i * 7919) % (len(ids) - len(ids) // 2)
            ids = ids[: max(2, keep)]
        if not ids:
            raise ExportError(f"sample text {i} encodes to no tokens: {text[:60]!r}")
        rows.append(ids)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def torch_outputs(module, input_ids: np.ndarray, attention_mask: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """The fp32 PyTorch outputs for the samples (the parity reference)."""
    import torch

    outs = []
    with torch.inference_mode():
        for lo in range(0, len(input_ids), batch_size):
            ids = torch.from_numpy(input_ids[lo: lo + batch_size])
            mask = torch.from_numpy(attention_mask[lo: lo + batch_size])
            outs.append(module(ids, mask).float().numpy())
    return np.concatenate(outs, axis=0).astype(np.float32)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_latency_ms(module, feeds: dict[str, np.ndarray], runs: int, threads: int) -> float:
    """Median wall time of one eager fp32 forward pass (after two warm-up passes)."""
    import torch

    from ml.export.parity import median_ms

    ids, mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
    with torch_threads(threads), torch.inference_mode():
        return median_ms(lambda: module(ids, mask), runs)
