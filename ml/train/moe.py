"""Sparse mixture-of-experts causal LM (``lm_checkpoint`` with ``model.arch: mixtral``): model, losses, routing metrics.

transformers' ``MixtralForCausalLM``, small; the loss adds the Switch load-balancing and ST-MoE z-losses
to cross-entropy, and export uses the ``batched_mm`` experts forward (same function, no data-dependent
control flow). Loss terms, logged expert shares and the export choice: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

USED_SHARE = 0.1
"""An expert is *used* in a layer when it gets at least this fraction of its fair share (1/E)."""
EXPORT_EXPERTS = "batched_mm"


def expert_ffn(cfg) -> int:
    """FFN width of one expert: set, or the dense ffn / experts_per_token (equal active parameters)."""
    return cfg.moe.expert_intermediate_size or max(1, cfg.ffn // cfg.moe.experts_per_token)


def build_moe_lm(cfg, vocab_size: int, ids: dict[str, Any]):
    """A fresh ``MixtralForCausalLM`` from ``LMModel`` settings (arch: mixtral)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    m = cfg.moe
    conf = MixtralConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=expert_ffn(cfg),
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads, max_position_embeddings=max(cfg.seq_len, 512),
        num_local_experts=m.num_experts, num_experts_per_tok=m.experts_per_token,
        router_aux_loss_coef=m.router_aux_loss_coef, router_jitter_noise=m.router_jitter_noise,
        output_router_logits=False, sliding_window=None, attention_dropout=cfg.dropout,
        tie_word_embeddings=cfg.tie_embeddings, use_cache=False, **ids)
    conf.router_z_loss_coef = m.router_z_loss_coef  # recorded in config.json; the loss itself is moe_loss
    return MixtralForCausalLM(conf)


def is_moe(config) -> bool:
    return bool(getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None))


def router_z_loss(router_logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean over layers and tokens of logsumexp(router logits)^2 (ST-MoE): keeps router logits small."""
    return torch.stack([torch.logsumexp(r.float(), dim=-1).pow(2).mean() for r in router_logits]).mean()


def aux_loss(router_logits: tuple[torch.Tensor, ...], num_experts: int, k: int) -> torch.Tensor:
    """The Switch load-balancing loss (transformers' implementation; 1.0 = perfectly balanced)."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    return load_balancing_loss_func(tuple(r.float() for r in router_logits), num_experts, k)


def routing_counts(router_logits: tuple[torch.Tensor, ...], k: int) -> torch.Tensor:
    """[layers, experts] count of top-k routing assignments."""
    rows = []
    for r in router_logits:
        top = torch.topk(r.float(), k, dim=-1).indices.reshape(-1)
        rows.append(torch.bincount(top, minlength=r.shape[-1]).double().cpu())
    return torch.stack(rows)


def utilisation(counts: torch.Tensor, used_share: float = USED_SHARE) -> dict[str, float]:
    """Per-expert shares and the summary figures from ``routing_counts`` (summed over batches)."""
    n_layers, n_exp = counts.shape
    share = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    out = {f"expert_share.l{l}.e{e}": float(share[l, e]) for l in range(n_layers) for e in range(n_exp)}
    out["experts_used"] = float((share >= used_share / n_exp).double().mean())
    out["min_expert_load"] = float(share.min() * n_exp)
    out["max_expert_load"] = float(share.max() * n_exp)
    return out


def _forward(model, batch):
    return model(input_ids=batch["input_ids"], output_router_logits=True)


def moe_loss(aux_coef: float, z_coef: float, num_experts: int, k: int) -> Callable[[Any, dict], torch.Tensor]:
    def loss(model, batch):
        out = _forward(model, batch)
        ce = F.cross_entropy(out.logits.flatten(0, 1).float(), batch["targets"].flatten())
        total = ce
        if aux_coef:
            total = total + aux_coef * aux_loss(out.router_logits, num_experts, k)
        if z_coef:
            total = total + z_coef * router_z_loss(out.router_logits)
        return total
    return loss


def eval_moe(num_experts: int, k: int) -> Callable[[Any, Iterator[dict]], dict[str, float]]:
    def evaluate(model, batches):
        total, n, correct, aux, z, nb = 0.0, 0, 0, 0.0, 0.0, 0
        counts = None
        for b in batches:
            out = _forward(model, b)
            logits, tgt = out.logits, b["targets"]
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten(), reduction="sum"))
            correct += int((logits.argmax(-1) == tgt).sum())
            n += tgt.numel()
            aux += float(aux_loss(out.router_logits, num_experts, k))
            z += float(router_z_loss(out.router_logits))
            nb += 1
            c = routing_counts(out.router_logits, k)
            counts = c if counts is None else counts + c
        loss = total / max(n, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "token_accuracy": correct / max(n, 1),
                "aux_loss": aux / max(nb, 1), "z_loss": z / max(nb, 1), **utilisation(counts)}
    return evaluate
