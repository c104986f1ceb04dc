"""Training throughput: our loop (ml/train/loop.py) against a bare PyTorch loop, same model and data, one run.

    python bench/train.py                                   # CPU, small Llama, sample corpus
    python bench/train.py --hidden 256 --layers 4 --seq 256 --steps 40
    python bench/train.py --device cuda --precision bf16 --hidden 512 --layers 8 --seq 512 --batch 32

Both loops train the same initial weights (one seed) on the same blocks in the same order of a
tokenized corpus built from the embedded sample corpus with the project's own tokenizer and shard
writer (in a temp dir). The bare loop is what one would write by hand: AdamW, the same
warmup+cosine LambdaLR, autocast, clip_grad_norm_, cross-entropy, nothing else. Ours adds the
Task indirection, sharded sampler, metric windows, the progress line and an evaluation at the end
(excluded from its timed window, as the loop reports it). Each loop runs ``--reps`` times,
alternating, and the best tokens/s of each is compared (noisy machines). On CUDA also prints MFU
(6 * parameters * tokens/s over ``--peak-tflops``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the repo root instead of bench/ itself, whose tokenize.py would shadow the standard library's
sys.path[:] = [str(ROOT)] + [p for p in sys.path[1:] if Path(p or ".").resolve() != ROOT / "bench"]


def make_corpus(tmp: Path, docs: int, vocab: int) -> tuple[Path, Path]:
    import polars as pl

    from ml.sample_corpus import build_sample_corpus
    from ml.tokenized_corpus import build_tokenized_corpus
    from ml.tokenizer import TokenizerConfig, build_tokenizer

    texts = [d["content"] for ds in build_sample_corpus(limit=docs).values() for d in ds]
    val = texts[: max(8, len(texts) // 20)]
    train = texts[len(val):]
    build_tokenizer(train, val, tmp / "tokenizer", TokenizerConfig(vocab_size=vocab))
    frame = lambda ts, p: pl.DataFrame({"doc_id": [f"{p}{i}" for i in range(len(ts))],
                                        "source": ["sample"] * len(ts), "text": ts})
    build_tokenized_corpus({"train": frame(train, "t"), "val": frame(val, "v")}, tmp / "tokenizer", tmp / "corpus")
    return tmp / "tokenizer", tmp / "corpus"


def bare_loop(model, blocks, order, cfg, rt) -> tuple[float, float]:
    """Hand-written loop over the same batches; returns (tokens/s, mean loss of the last log window)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ml.train.loop import lr_lambda

    model.to(rt.device).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            fused=rt.device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio))
    tokens, elapsed, losses = 0, 0.0, []
    for step in range(cfg.max_steps):
        t0 = time.perf_counter()
        idx = order(step)
        batch = torch.from_numpy(np.stack([blocks[i] for i in idx]))
        x, y = batch[:, :-1].to(rt.device), batch[:, 1:].to(rt.device)
        with rt.autocast():
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - t0
        tokens += x.numel()
        losses.append(loss.item())  # after the timed window
    window = cfg.max_steps % cfg.log_every or cfg.log_every
    return tokens / elapsed, sum(losses[-window:]) / window


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a busy machine)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--docs", type=int, default=800, help="sample-corpus documents for the token shards")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak (H100/H200 bf16 dense: 989)")
    args = ap.parse_args()

    import torch

    from ml.tokenized_corpus import TokenShards
    from ml.tokenizer import load_tokenizer
    from ml.train import device as devmod
    from ml.train.config import DeviceSettings, LMModel, LoopSettings
    from ml.train.ddp import ShardedSampler
    from ml.train.loop import Task, train
    from ml.train.models import build_lm
    from ml.train.tasks import Blocks, causal_loss, collate_blocks, eval_causal

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        t0 = time.perf_counter()
        tok_dir, corpus = make_corpus(Path(tmp), args.docs, args.vocab)
        print(f"corpus: {time.perf_counter() - t0:.1f}s to tokenize {args.docs} sample documents")
        tok = load_tokenizer(tok_dir)
        train_blocks = Blocks(TokenShards(corpus, "train"), args.seq)
        val_blocks = Blocks(TokenShards(corpus, "val"), args.seq)
        settings = DeviceSettings(device=args.device, precision=args.precision, seed=0, threads=args.threads)
        rt = devmod.resolve(settings)
        mcfg = LMModel(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, seq_len=args.seq)
        cfg = LoopSettings(max_steps=args.steps, batch_size=args.batch, lr=1e-3, warmup_steps=min(5, args.steps - 1),
                           eval_every=10**9, eval_batches=2, save_every=10**9, log_every=10)
        sampler = ShardedSampler(len(train_blocks), args.batch, settings.seed)
        torch.manual_seed(0)
        init = build_lm(mcfg, tok).state_dict()
        n_params = sum(v.numel() for k, v in init.items() if "rotary" not in k)
        print(f"model: llama hidden {args.hidden} x {args.layers} layers, seq {args.seq}, batch {args.batch}, "
              f"{n_params / 1e6:.2f}M parameters; {len(train_blocks)} train blocks; device {rt.name}, {args.precision}")

        def fresh():
            m = build_lm(mcfg, tok)
            m.load_state_dict(init)
            return m

        ours, bare, loss_ours = [], [], []
        for rep in range(args.reps):
            tps, bare_loss = bare_loop(fresh(), train_blocks, sampler.batch, cfg, rt)
            bare.append(tps)
            task = Task("lm", fresh(), train_blocks, val_blocks, collate_blocks, causal_loss, eval_causal,
                        count=lambda b: (b["input_ids"].shape[0], b["input_ids"].numel()))
            result = train(task, cfg, rt, work=None, log=lambda m: None)
            ours.append(result.summary["tokens_per_s"])
            loss_ours.append(result.summary["final_train_loss"])
            print(f"rep {rep + 1}: bare {bare[-1]:,.0f} tok/s   ours {ours[-1]:,.0f} tok/s   "
                  f"(final train loss: bare {bare_loss:.4f}, ours {loss_ours[-1]:.4f}: same training)")
        b, o = max(bare), max(ours)
        print(f"\nbest of {args.reps}: bare PyTorch loop {b:,.0f} tok/s | lineage-forge loop {o:,.0f} tok/s | "
              f"ratio ours/bare = {o / b:.3f} (goal >= 0.9)")
        if rt.device.type == "cuda":
            for name, tps in (("bare", b), ("ours", o)):
                mfu = 6 * n_params * tps / (args.peak_tflops * 1e12)
                print(f"MFU {name}: {100 * mfu:.1f}% of {args.peak_tflops:.0f} TFLOPS "
                      f"(6 x {n_params / 1e6:.1f}M params x tokens/s; attention FLOPs not counted)")
            print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
