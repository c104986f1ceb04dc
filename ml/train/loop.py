"""THE training loop, shared by every model (nanoGPT-style: read it top to bottom).

A model plugs in as a ``Task``; the loop owns optimizer, schedule, precision, evaluation, checkpoints,
resume (bit-identical on CPU with a fixed seed), DDP and early stopping. Throughput and memory are run
facts, never metrics.jsonl. What it does, point by point: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ml.train import checkpointing as ckpt
from ml.train import ddp
from ml.train.config import LOWER_IS_BETTER, LoopSettings
from ml.train.device import Runtime, seed_everything

Batch = dict[str, torch.Tensor]
KILL_ENV = "LINEAGE_TRAIN_KILL_AT_STEP"
"""Crash drill: SIGKILL the process when it reaches this step (used by the resume tests)."""


@dataclass
class Task:
    """What the loop needs to know about one model."""

    name: str
    model: nn.Module
    train_set: Sequence[Any]
    val_set: Sequence[Any]
    collate: Callable[[list[Any]], Batch]
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    evaluate: Callable[[nn.Module, Iterator[Batch]], dict[str, float]]
    count: Callable[[Batch], tuple[int, int]]  # (samples, tokens) in a batch
    best_metric: str = "loss"
    best_mode: str = "min"  # "min" | "max"


@dataclass
class TrainResult:
    metrics: list[dict[str, Any]] = field(default_factory=list)  # {step, split, metric, value}
    summary: dict[str, Any] = field(default_factory=dict)
    # run facts of this process's steps: {step, seconds, tokens_per_s, samples_per_s} per optimizer step and
    # {step, eval_seconds, peak_memory_mb} per evaluation; wall-clock dependent, so never part of the content
    step_facts: list[dict[str, Any]] = field(default_factory=list)


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def make_optimizer(model: nn.Module, cfg: LoopSettings, device: torch.device) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type == "cuda")


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _fmt_rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def enable_grad_checkpointing(model: nn.Module) -> None:
    target = model
    for attr in ("base_model", "model"):  # a peft wrapper: reach the transformers model
        if not hasattr(target, "gradient_checkpointing_enable") and hasattr(target, attr):
            target = getattr(target, attr)
    if hasattr(target, "activation_checkpointing_enable"):  # transformers >= 5
        target.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(target, "gradient_checkpointing_enable"):
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise ValueError(f"train.grad_checkpointing: {type(model).__name__} does not support gradient checkpointing")
    if hasattr(target, "enable_input_require_grads"):
        target.enable_input_require_grads()  # frozen embeddings (LoRA) still pass gradients through


def evaluate(task: Task, model: nn.Module, cfg: LoopSettings, rt: Runtime) -> dict[str, float]:
    """The task's metrics on the first eval_batches x batch_size validation examples (same on every rank)."""
    n = min(len(task.val_set), cfg.eval_batches * cfg.batch_size)

    def batches() -> Iterator[Batch]:
        for lo in range(0, n, cfg.batch_size):
            yield to_device(task.collate([task.val_set[i] for i in range(lo, min(n, lo + cfg.batch_size))]), rt.device)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), rt.autocast():
            return {k: float(v) for k, v in task.evaluate(model, batches()).items()}
    finally:
        model.train(was_training)


def train(task: Task, cfg: LoopSettings, rt: Runtime, work: Path | None = None,
          log: Callable[[str], None] = print, resume_from: Path | None = None,
          init_from: Path | None = None) -> TrainResult:
    """Train ``task.model`` in place for cfg.max_steps optimizer steps (resuming from ``work`` if it holds state,
    else from the step checkpoint ``resume_from``; ``init_from``: only that checkpoint's weights, at step 0)."""
    rank, world = rt.rank, rt.world_size
    main = rank == 0
    best_metric = cfg.best_metric or task.best_metric
    mode = cfg.best_mode or (task.best_mode if cfg.best_metric is None else
                             "min" if best_metric in LOWER_IS_BETTER else "max")
    sign = 1.0 if mode == "min" else -1.0
    if len(task.val_set) == 0:
        raise ValueError(f"{task.name}: the validation split is empty")
    model = task.model.to(rt.device)
    if cfg.grad_checkpointing:
        enable_grad_checkpointing(model)
    model.train()
    optimizer = make_optimizer(model, cfg, rt.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16" and rt.device.type == "cuda")
    sampler = ddp.ShardedSampler(len(task.train_set), cfg.batch_size, rt.settings.seed, rank, world)
    wrapped: nn.Module = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)

    step, micro, history = 0, 0, []
    best: dict[str, Any] | None = None
    resumed_from = None
    last = ckpt.latest(work) if work is not None else None
    if last is None and resume_from is not None:  # continue another run: its checkpoint becomes ours
        if work is not None:
            if main:
                ckpt.adopt(resume_from, work)
            ddp.barrier()
            last = ckpt.latest(work)
        else:
            last = Path(resume_from)
        started = ckpt.verify(last)["step"]
        if started >= cfg.max_steps:
            raise ValueError(f"train.resume_from: {resume_from} is at step {started}, not below train.max_steps="
                             f"{cfg.max_steps}: nothing left to train (raise max_steps)")
    if last is not None:
        loaded = ckpt.load_checkpoint(last, model=model, optimizer=optimizer, device=rt.device, rank=rank,
                                      world_size=world)
        st = loaded.state
        step, micro, history, best = loaded.step, st["micro_step"], st["history"], st.get("best")
        es_ref, es_bad = st.get("early_stopping", {}).get("ref"), st.get("early_stopping", {}).get("bad", 0)
        window = loaded.rank_state.get("window")
        scheduler.load_state_dict(st["scheduler"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        resumed_from = step
        if main:
            log(f"[{task.name}] resumed from {last} (step {step}/{cfg.max_steps}, data position {micro})")
    else:
        seed_everything(rt.settings.seed + rank)
        window = None
        es_ref, es_bad = None, 0  # early stopping: the value that last counted as an improvement, evals since
        if init_from is not None:  # a new stage: the weights of another checkpoint, nothing else
            try:
                ckpt.load_weights(init_from, model)
            except ckpt.CheckpointError as exc:
                raise ckpt.CheckpointError(f"train.init_from {init_from}: {exc}") from exc
            if main:
                log(f"[{task.name}] initialised from the weights of {init_from}")

    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    train_time, samples_total, tokens_total = 0.0, 0, 0
    loss_acc = torch.zeros((), device=rt.device)  # summed on the device: no host sync per micro-batch
    win_count = torch.zeros(3, dtype=torch.float64)  # micro-batches, samples, tokens since the last log line
    if window:  # steps done since the last log line before the checkpoint: their losses still count
        loss_acc.fill_(window[0])
        win_count.copy_(torch.tensor(window[1:], dtype=torch.float64))
    win_time = 0.0
    start_step = step
    diverged = None
    stopped_early = None
    step_facts: list[dict[str, Any]] = []
    all_params = [p for p in model.parameters() if p.requires_grad]

    def snapshot_state() -> dict[str, Any]:
        return {"micro_step": micro, "epoch": sampler.epoch_of(micro), "history": history, "best": best,
                "early_stopping": {"ref": es_ref, "bad": es_bad}, "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "task": task.name}

    while step < cfg.max_steps:
        if kill_at and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        t0 = time.perf_counter()
        step_count = [0, 0]  # samples, tokens of this optimizer step (this process)
        for k in range(cfg.grad_accum_steps):
            cpu_batch = task.collate([task.train_set[i] for i in sampler.batch(micro)])
            n_samples, n_tokens = task.count(cpu_batch)
            batch = to_device(cpu_batch, rt.device)
            sync = world == 1 or k == cfg.grad_accum_steps - 1
            with (contextlib.nullcontext() if sync else wrapped.no_sync()):
                with rt.autocast():
                    loss = task.loss(wrapped, batch)
                scaler.scale(loss / cfg.grad_accum_steps).backward()
            loss_acc += loss.detach().float()
            win_count += torch.tensor([1.0, n_samples, n_tokens], dtype=torch.float64)
            step_count[0] += n_samples
            step_count[1] += n_tokens
            micro += 1
        scaler.unscale_(optimizer)
        # the total gradient norm before clipping (inf: measure only); synchronised gradients, same on every rank
        grad_norm = torch.nn.utils.clip_grad_norm_(all_params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)
        dt = time.perf_counter() - t0
        train_time += dt
        win_time += dt
        history.append({"step": step, "split": "train", "metric": "grad_norm", "value": float(grad_norm)})
        step_facts.append({"step": step, "seconds": dt, "tokens_per_s": step_count[1] * world / max(dt, 1e-9),
                           "samples_per_s": step_count[0] * world / max(dt, 1e-9)})

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            win = ddp.sum_(torch.cat([loss_acc.double().cpu().reshape(1), win_count]))
            train_loss = float(win[0] / max(1.0, float(win[1])))
            samples_total += int(win[2])
            tokens_total += int(win[3])
            tok_s, smp_s = float(win[3]) / max(win_time, 1e-9), float(win[2]) / max(win_time, 1e-9)
            lr = scheduler.get_last_lr()[0]
            history += [{"step": step, "split": "train", "metric": "loss", "value": train_loss},
                        {"step": step, "split": "train", "metric": "lr", "value": lr}]
            if main:
                eta = (cfg.max_steps - step) * train_time / max(1, step - start_step)
                log(f"[{task.name}] step {step}/{cfg.max_steps} ({100 * step // cfg.max_steps}%) "
                    f"loss {train_loss:.4f} lr {lr:.2e} | {_fmt_rate(tok_s)} tok/s {_fmt_rate(smp_s)} samples/s "
                    f"| elapsed {_fmt_time(train_time)} eta {_fmt_time(eta)}")
            loss_acc.zero_(), win_count.zero_()
            win_time = 0.0
            if not math.isfinite(train_loss):
                diverged = step

        improved = False
        if step % cfg.eval_every == 0 or step == cfg.max_steps or diverged:
            t_eval = time.perf_counter()
            metrics = evaluate(task, model, cfg, rt)
            step_facts.append({"step": step, "eval_seconds": time.perf_counter() - t_eval,
                               "peak_memory_mb": round(rt.peak_memory_mb(), 1)})
            history += [{"step": step, "split": "val", "metric": k, "value": v} for k, v in metrics.items()]
            if best_metric not in metrics:
                raise ValueError(f"train.best_metric: {task.name} reports {sorted(metrics)}, not {best_metric!r}")
            value = metrics[best_metric]
            improved = math.isfinite(value) and (best is None or sign * value < sign * best["value"])
            improved = ddp.broadcast_flag(improved, rt.device)
            if improved:
                best = {"metric": best_metric, "mode": mode, "value": value, "step": step}
            if cfg.early_stopping_patience:  # every rank sees the same metrics, so they all stop together
                if math.isfinite(value) and (es_ref is None or sign * value < sign * es_ref - cfg.early_stopping_min_delta):
                    es_ref, es_bad = value, 0
                else:
                    es_bad += 1
                if es_bad >= cfg.early_stopping_patience and step < cfg.max_steps:
                    stopped_early = step
            if main:
                log(f"[{task.name}] eval @ {step}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    + (" (best)" if improved else ""))
        if work is not None and (step % cfg.save_every == 0 or step == cfg.max_steps or improved or stopped_early):
            ckpt.save_checkpoint(work, step, model=model, optimizer=optimizer, state=snapshot_state(),
                                 device=rt.device, rank=rank, world_size=world, barrier=ddp.barrier,
                                 rank_state={"window": [float(loss_acc), *win_count.tolist()]})
            if main:  # names first (they point at steps prune keeps), then prune
                ckpt.update_names(work, best["step"] if best else None)
                ckpt.prune(work, cfg.keep_last, {best["step"]} if best else set())
            ddp.barrier()
        if diverged:
            if main:
                log(f"[{task.name}] training diverged at step {step} (loss is not finite); stopping early")
            break
        if stopped_early:
            if main:
                log(f"[{task.name}] early stopping at step {step}: {best_metric} did not improve by more than "
                    f"{cfg.early_stopping_min_delta} in {es_bad} evaluations (best step {best and best['step']})")
            break

    exported, val_step = "last", max((x["step"] for x in history if x["split"] == "val"), default=-1)
    if cfg.export == "best" and best is not None and work is not None and best["step"] != step:
        best_dir = ckpt.checkpoint_dir(work) / f"step-{best['step']:08d}"
        if not (best_dir / ckpt.STATE).is_file():
            raise ckpt.CheckpointError(f"train.export=best: the best step {best['step']} ({best['metric']} "
                                       f"{best['value']:.4g}) is not in {ckpt.checkpoint_dir(work)} (a resumed run "
                                       "whose best checkpoint was not beside the one it resumed from)")
        ckpt.load_weights(best_dir, model)
        exported, val_step = f"best (step {best['step']})", best["step"]
    # the validation metrics of the weights that are published
    final_val = {r["metric"]: r["value"] for r in history if r["split"] == "val" and r["step"] == val_step}
    train_losses = [r["value"] for r in history if r["split"] == "train" and r["metric"] == "loss"]
    summary = {
        "task": task.name, "steps": step, "max_steps": cfg.max_steps, "resumed_from_step": resumed_from,
        "diverged_at_step": diverged, "exported_weights": exported,
        "early_stopping": {"patience": cfg.early_stopping_patience, "min_delta": cfg.early_stopping_min_delta,
                           "metric": best_metric, "stopped_at_step": stopped_early,
                           "best_step": best["step"] if best else None},
        "final_train_loss": train_losses[-1] if train_losses else None,
        "first_train_loss": train_losses[0] if train_losses else None,
        "val": final_val, "best": best,
        "train_seconds_this_run": round(train_time, 3),
        "tokens_this_run": tokens_total, "samples_this_run": samples_total,
        "tokens_per_s": tokens_total / train_time if train_time else None,
        "samples_per_s": samples_total / train_time if train_time else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": rt.name, "precision": rt.precision, "world_size": world,
        "effective_batch_size": cfg.batch_size * cfg.grad_accum_steps * world,
        "peak_memory_mb": round(rt.peak_memory_mb(), 1),
    }
    return TrainResult(history, summary, step_facts)
