"""Sparse MoE LM vs dense LM at equal active parameters, and expert utilisation with and without the
router aux loss, on the debug corpus (the embedded sample corpus, vocab 4,096), one run.

    python bench/moe.py                          # 300 steps each, CPU, one thread
    python bench/moe.py --steps 600 --experts 8

Four LMs train through the one loop (ml/train/run.py), same data, same seed, same schedule:

- ``dense``: Llama, hidden 64, 2 layers, FFN 256 (configs/debug.yaml's LM);
- ``moe``: Mixtral, the same attention, ``--experts`` experts of FFN 256 / 2 per layer, top-2: the FFN
  parameters active per token equal the dense FFN's (router aux 0.01, z 0.001: configs/moe.yaml);
- ``moe_no_aux``: the same MoE with router aux and z losses off;
- ``moe_no_aux_skewed``: no aux loss, router initialised with a bias towards one expert (a stress
  test of whether the aux loss is what keeps utilisation up).

Prints val loss / perplexity (cross-entropy only), training tokens/s (ratio to dense), parameters
(total and active per token), and the utilisation figures logged at the last evaluation: share of
experts used (>= 10% of the fair share), min / max expert load (x the fair share), aux loss, and
each layer's token shares.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path[1:] if Path(p or ".").resolve() != ROOT / "bench"]


def lm_settings(arch: str, args, aux: float, z: float) -> dict:
    model = {"arch": arch, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256,
             "seq_len": 64}
    if arch == "mixtral":
        model["moe"] = {"num_experts": args.experts, "experts_per_token": 2, "router_aux_loss_coef": aux,
                        "router_z_loss_coef": z}
    return {"model": model, "train": {"max_steps": args.steps, "batch_size": 16, "lr": 0.003, "warmup_steps": 20,
                                      "eval_every": max(1, args.steps // 3), "eval_batches": 10,
                                      "save_every": args.steps, "log_every": 25}}


def run(name: str, settings: dict, inputs: dict, out: Path, skew: float = 0.0) -> dict:
    from ml.train import run as train_run
    from ml.train.config import DeviceSettings

    spec = train_run.TrainSpec(asset="lm_checkpoint", settings=settings, inputs=inputs, out_dir=str(out),
                       device=DeviceSettings(device="cpu", seed=0, threads=1))
    if skew:
        from ml.train import models

        real = models.build_lm

        def build(cfg, tok):
            m = real(cfg, tok)
            with __import__("torch").no_grad():
                for layer in m.model.layers:
                    layer.mlp.gate.weight[0] += skew * layer.mlp.gate.weight.abs().mean()
            return m
        models.build_lm = build
        try:
            summary = train_run.run_training(spec, log=lambda m: None)
        finally:
            models.build_lm = real
    else:
        summary = train_run.run_training(spec, log=lambda m: None)
    return summary


def active_parameters(out: Path) -> tuple[int, int]:
    from ml.train.models import load_lm

    model, _ = load_lm(out)
    total = sum(p.numel() for p in model.parameters())
    conf = model.config
    e = getattr(conf, "num_local_experts", None)
    if not e:
        return total, total
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    return total, total - experts + experts * conf.num_experts_per_tok // e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--docs", type=int, default=0, help="sample-corpus documents (0: all)")
    ap.add_argument("--skew", type=float, default=3.0, help="router bias for the skewed no-aux run (0: skip it)")
    args = ap.parse_args()

    from bench.train import make_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok, corpus = make_corpus(tmp, args.docs or None, 4096)
        inputs = {"tokenizer": str(tok), "tokenized_corpus": str(corpus)}
        runs = [("dense", lm_settings("llama", args, 0, 0), 0.0),
                ("moe", lm_settings("mixtral", args, 0.01, 0.001), 0.0),
                ("moe_no_aux", lm_settings("mixtral", args, 0.0, 0.0), 0.0)]
        if args.skew:
            runs += [("moe_skewed", lm_settings("mixtral", args, 0.01, 0.001), args.skew),
                     ("moe_no_aux_skewed", lm_settings("mixtral", args, 0.0, 0.0), args.skew)]
        results = {}
        for name, settings, skew in runs:
            out = tmp / name
            s = run(name, settings, inputs, out, skew)
            total, active = active_parameters(out)
            results[name] = {"val": s["val"], "tokens_per_s": s["tokens_per_s"], "total": total, "active": active}
            print(f"{name}: done ({s['train_seconds_this_run']:.0f} s)", flush=True)

    base = results["dense"]["tokens_per_s"]
    print(f"\n{args.steps} steps, batch 16 x 64 tokens, CPU 1 thread; E={args.experts}, top-2")
    print(f"{'run':<18} {'params':>8} {'active':>8} {'val loss':>9} {'ppl':>7} {'tok/s':>8} {'x dense':>8} "
          f"{'used':>6} {'min load':>9} {'max load':>9} {'aux':>6}")
    for name, r in results.items():
        v = r["val"]
        used = v.get("experts_used")
        print(f"{name:<18} {r['total']:>8} {r['active']:>8} {v['loss']:>9.4f} {v['perplexity']:>7.1f} "
              f"{r['tokens_per_s']:>8.0f} {r['tokens_per_s'] / base:>8.2f} "
              + (f"{used:>6.2f} {v['min_expert_load']:>9.2f} {v['max_expert_load']:>9.2f} {v['aux_loss']:>6.3f}"
                 if used is not None else f"{'-':>6} {'-':>9} {'-':>9} {'-':>6}"))
    for name, r in results.items():
        shares = {k: round(x, 3) for k, x in r["val"].items() if k.startswith("expert_share.")}
        if shares:
            layers = sorted({k.split(".")[1] for k in shares})
            print(f"{name:<18} " + " | ".join(
                f"{l}: " + " ".join(f"{shares[f'expert_share.{l}.e{e}']:.2f}" for e in range(args.experts))
                for l in layers))
    print(json.dumps({n: {"val_loss": r["val"]["loss"], "tokens_per_s": r["tokens_per_s"],
                          "experts_used": r["val"].get("experts_used")} for n, r in results.items()}))


if __name__ == "__main__":
    main()
