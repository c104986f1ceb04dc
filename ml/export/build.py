"""Build an ONNX bundle: every model exported, quantized, checked against PyTorch and described.

``build_bundle`` writes ``bundle/`` (layout: bundle.py) and the deterministic ``bundle.tar.gz``
(tarball.py) into a staging directory, and the run facts (latency, export seconds) into its run
record ``_run/latency.json`` (ml/run_record.py): they are not content, so two builds from the same
checkpoints give the same bundle bytes. ``build_onnx_bundle`` is the store-level call the asset makes.
"""

from __future__ import annotations

import gc
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ml import run_record
from ml.export import parity
from ml.export.bundle import (BUNDLE_DIR, FORMAT, FP32, INT8, LATENCY, MANIFEST, PARITY, SAMPLES, TARBALL, TOKENIZER,
                              BundleError)
from ml.export.quantize import PER_CHANNEL_MODES
from ml.export.tarball import pack_tar
from ml.fsutil import atomic_write_json
from ml.store import list_files  # list_files leaves MANIFEST out


@dataclass(frozen=True)
class BundleConfig:
    opset: int = 17
    max_length: int = 128
    samples: int = 32
    skip_quantization: bool = False
    per_channel: str = "auto"  # auto | on | off
    quantize_embeddings: str = "auto"  # auto | on | off: Gather (embedding tables) int8 or fp32
    reduce_range: bool = False
    measure_latency: bool = True
    latency_runs: int = 20
    latency_seq: int = 128
    latency_batches: tuple[int, ...] = (1, 32)
    threads: int = 0  # 0: every core this process may use
    thresholds: parity.Thresholds = field(default_factory=parity.Thresholds)
    int4: bool = True  # causal LMs: also an int4 weight-only model (MatMulNBits) with its own parity gate
    int4_block_size: int = 32  # weights per int4 block (a power of two >= 16)
    int4_symmetric: bool = False  # False: a 4-bit zero point per block (closer to fp32 on the debug LM)
    int4_accuracy_level: int = 0  # MatMulNBits accuracy_level (0: ORT's default; 4: int8 activations)
    int4_embeddings: str = "auto"  # auto | int8 | fp32: the int4 model's embedding table (int4 Gather needs opset 21)

    def __post_init__(self) -> None:
        from ml.export.int4 import check_block_size

        try:
            check_block_size(self.int4_block_size)
        except ValueError as exc:
            raise BundleError(str(exc)) from None
        if self.int4_embeddings not in ("auto", "int8", "fp32"):
            raise BundleError(f"int4_embeddings must be auto, int8 or fp32, got {self.int4_embeddings!r}")
        for name in ("per_channel", "quantize_embeddings"):
            if getattr(self, name) not in PER_CHANNEL_MODES:
                raise BundleError(f"{name} must be one of {PER_CHANNEL_MODES}, got {getattr(self, name)!r}")
        if self.samples < 1 or self.max_length < 2:
            raise BundleError("samples must be >= 1 and max_length >= 2")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency_batches"] = list(self.latency_batches)
        return d


# ---- building -------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    out = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
           "transformers": transformers.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        import peft

        out["peft"] = peft.__version__
    except ImportError:
        pass
    return out


def _copy_tree(src: Path, dst: Path) -> list[str]:
    """Copy the regular files of src (contents only; links are followed) into dst."""
    copied = []
    for path in sorted(Path(src).rglob("*")):
        if path.is_dir():
            continue
        if not path.is_file():
            raise BundleError(f"{path} is not a regular file")
        rel = path.relative_to(src)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst / rel)
        copied.append(rel.as_posix())
    if not copied:
        raise BundleError(f"tokenizer directory {src} is empty")
    return copied


def _int8_rank(qinfo: dict[str, Any], res: dict[str, Any]) -> tuple:
    """INT8 candidates, best last: passing first; among passing ones INT8 embedding tables (smaller)
    before fp32 ones; then the closer to PyTorch (criteria values, then mean cosine)."""
    passed = res["passed"]
    return (passed, passed and qinfo["quantize_embeddings"], *(c["value"] or 0.0 for c in res["criteria"]),
            res["metrics"].get("cosine_mean", 0.0))


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    return {"passed": res["passed"], **{k: res["metrics"].get(k) for k in ("max_abs_diff", "cosine_mean", "cosine_min", "argmax_agreement")}}


def _export_one(src, mdir: Path, cfg: BundleConfig, log: Callable[[str], None]) -> tuple[dict, dict, dict]:
    """Export, quantize, check and time one model into ``mdir``; (manifest entry, parity results, run facts)."""
    from ml.export import int4
    from ml.export import latency
    from ml.export import quantize
    from ml.export import to_onnx

    threads = cfg.threads or parity.default_threads()
    mdir.mkdir(parents=True)
    model = to_onnx.load_model(src)
    module = to_onnx.wrap(src, model)
    info = to_onnx.model_info(src, model)
    tok = to_onnx.load_tokenizer(src.tokenizer_dir)
    max_len = min(cfg.max_length, info["max_positions"]) if info["max_positions"] else cfg.max_length
    graph = src.kind in to_onnx.GRAPH_KINDS
    seconds: dict[str, float] = {}  # run facts: how long each step took

    if graph:  # the GNN ranker: samples are subgraphs (ml/gnn/export.py), texts are their queries
        from ml.gnn import export as gnn_export

        feeds, texts, from_split = gnn_export.sample_batch(src.graph["dataset_dir"], src.graph["embedding_dir"],
                                                           cfg.samples, src.graph["feature_max_len"])
        cut = False
        with to_onnx.torch_threads(threads):
            reference = gnn_export.torch_scores(module, feeds)
        src.provenance.setdefault("samples_from_split", from_split)
        parity.save_samples(mdir / SAMPLES, feeds=feeds, reference=reference, texts=texts)
    else:
        texts = src.texts[: cfg.samples]
        cut = src.cut_samples[: cfg.samples] if isinstance(src.cut_samples, list) else src.cut_samples
        enc = to_onnx.encode_samples(tok, texts, max_length=max_len, cut=cut)
        with to_onnx.torch_threads(threads):
            reference = to_onnx.torch_outputs(module, enc["input_ids"], enc["attention_mask"])
        used = [tok.decode(ids[m == 1].tolist()) for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
        parity.save_samples(mdir / SAMPLES, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       reference=reference, texts=used)
    samples = parity.load_samples(mdir / SAMPLES)

    log(f"{src.name}: exporting {info['architecture']} ({info['parameters']:,} parameters) to ONNX")
    if graph:
        export_info = gnn_export.export_onnx(module, feeds, mdir / FP32, opset=cfg.opset)
    else:
        export_info = to_onnx.export_onnx(module, mdir / FP32, kind=src.kind, vocab_size=info["vocab_size"],
                                          opset=cfg.opset)
    seconds["export"] = export_info.pop("seconds", 0.0)
    tok_files = _copy_tree(Path(src.tokenizer_dir), mdir / TOKENIZER)
    results = {"fp32": parity.check_onnx(mdir / FP32, src.kind, "fp32", samples, cfg.thresholds, threads)}

    quant: dict[str, Any] | None = None
    if not cfg.skip_quantization:
        with tempfile.TemporaryDirectory(prefix=f"int8-{src.name}-") as tmp:
            pre = Path(tmp) / "pre.onnx"
            method = quantize.preprocess(mdir / FP32, pre)
            tried = []
            for emb in quantize.candidates(cfg.quantize_embeddings, "quantize_embeddings"):
                for per_channel in quantize.candidates(cfg.per_channel):
                    name = quantize.candidate_name(per_channel, emb)
                    path = Path(tmp) / f"int8-{name}.onnx"
                    qinfo = quantize.quantize_int8(pre, path, per_channel=per_channel, reduce_range=cfg.reduce_range,
                                                   quantize_embeddings=emb)
                    seconds[f"int8_{name}"] = qinfo.pop("seconds", 0.0)
                    res = parity.check_onnx(path, src.kind, "int8", samples, cfg.thresholds, threads)
                    tried.append((name, qinfo, res, path))
                    log(f"{src.name}: INT8 {name}: {_summary(res)}")
            name, qinfo, res, path = max(tried, key=lambda t: _int8_rank(t[1], t[2]))
            shutil.copyfile(path, mdir / INT8)
        quant = {**qinfo, "preprocess": method, "mode": cfg.per_channel, "embeddings_mode": cfg.quantize_embeddings,
                 "chosen": name, "candidates": {n: _summary(r) for n, _, r, _ in tried}}
        results["int8"] = {**res, "per_channel": qinfo["per_channel"], "quantize_embeddings": qinfo["quantize_embeddings"]}

    quant4, res4 = int4.build(src.kind, mdir, samples, cfg, threads, log, name=src.name)
    if quant4 and "seconds" in quant4:
        seconds["int4"] = quant4.pop("seconds")
    if res4 is not None:
        results["int4"] = res4
    has4 = (mdir / int4.FILE).is_file()
    del module, model
    gc.collect()

    run_facts: dict[str, Any] = {"seconds": seconds}
    if cfg.measure_latency:
        run_facts.update(latency.measure(src, mdir, samples, info, cfg, threads, has_int8=quant is not None,
                                   int4_file=int4.FILE if has4 else None))
        log(f"{src.name}: latency (ms, median of {cfg.latency_runs}, {threads} threads): {run_facts['latency_ms']}")

    sizes = {"fp32": (mdir / FP32).stat().st_size}
    if quant:
        sizes["int8"] = (mdir / INT8).stat().st_size
        sizes["int8_ratio"] = round(sizes["int8"] / sizes["fp32"], 4)
    if has4:
        sizes["int4"] = (mdir / int4.FILE).stat().st_size
        sizes["int4_ratio"] = round(sizes["int4"] / sizes["fp32"], 4)
    entry = {
        **info,
        "source": src.provenance,
        "files": {"fp32": f"{src.name}/{FP32}", **({"int8": f"{src.name}/{INT8}"} if quant else {}),
                  **({"int4": f"{src.name}/{int4.FILE}"} if has4 else {}),
                  "samples": f"{src.name}/{SAMPLES}", "tokenizer": f"{src.name}/{TOKENIZER}/"},
        "tokenizer": {"class": type(tok).__name__, "files": tok_files, "pad_token_id": tok.pad_token_id,
                      "padding_side": "right", "max_length": max_len,
                      "encode": "tokenizer(text, truncation=True, max_length=max_length); right-pad; "
                                "attention_mask 1 on real tokens"},
        "samples": {"count": int(len(samples["reference"])),
                    "width": int(samples["reference"].shape[1] if graph else samples["input_ids"].shape[1]),
                    "cut": int(sum(cut)) if isinstance(cut, list) else (len(texts) if cut else 0),
                    "from": src.provenance.get("samples")},
        "export": export_info,
        "quantization": quant,
        "quantization_int4": quant4,
        "metrics": src.metrics,
        "parity": {prec: _summary(r) for prec, r in results.items()},
        "bytes": sizes,
    }
    return entry, results, run_facts


def build_bundle(sources: list, out: Path, cfg: BundleConfig, *, lineage: dict[str, Any],
                 producer: dict[str, Any] | None = None, log: Callable[[str], None] = print,
                 evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out/bundle/``, ``out/bundle.tar.gz`` and the run record ``out/_run/latency.json`` for the
    model sources; returns the manifest. ``evaluation``: the models' held-out test figures
    (model_evaluation), carried as the manifest's ``evaluation`` (null when none measured these model versions)."""
    names = [s.name for s in sources]
    if not sources or len(set(names)) != len(names):
        raise BundleError(f"a bundle needs one or more models with distinct names, got {names}")
    root = Path(out) / BUNDLE_DIR
    root.mkdir(parents=True)
    models, report, facts = {}, {}, {}
    for src in sources:
        models[src.name], report[src.name], facts[src.name] = _export_one(src, root / src.name, cfg, log)
    passed = all(r["passed"] for per in report.values() for r in per.values())
    atomic_write_json(root / PARITY, {"thresholds": cfg.thresholds.as_dict(), "passed": passed, "models": report})
    files = list_files(root)
    for name, entry in models.items():  # each model's own files, with sha256 and size
        entry["artifacts"] = [f for f in files if f["path"].startswith(f"{name}/")]
    manifest = {
        "format": FORMAT,
        "producer": dict(producer or {}),
        "config": cfg.as_dict(),
        "opset": cfg.opset,
        "versions": library_versions(),
        "models": models,
        "parity": {"passed": passed, "file": PARITY, "thresholds": cfg.thresholds.as_dict()},
        "lineage": lineage,
        "evaluation": evaluation,
        "files": files,
    }
    atomic_write_json(root / MANIFEST, manifest)
    pack_tar(root, Path(out) / TARBALL)
    run_record.write_json(out, LATENCY, {"models": facts})
    return manifest


def read_latency(version_dir: Path) -> dict[str, Any]:
    """The run record of a built bundle (per model: latency_ms, latency_setup, seconds); {} when absent."""
    return run_record.read_json(version_dir, LATENCY) or {}


def bundle_stats(manifest: dict[str, Any]) -> dict[str, float]:
    """Flat content numbers for the catalog's dataset_stats (bytes.<model>.<prec>, parity.<model>.<prec>.<metric>).
    Latency figures are run facts: ``latency.latency_facts``."""
    stats: dict[str, float] = {"models": len(manifest["models"]), "parity_passed": float(manifest["parity"]["passed"])}
    for name, m in manifest["models"].items():
        for prec, size in m["bytes"].items():
            stats[f"bytes.{name}.{prec}"] = size
        for prec, summary in m["parity"].items():
            for k, v in summary.items():
                if v is not None:
                    stats[f"parity.{name}.{prec}.{k}"] = float(v)
    return stats


def build_onnx_bundle(store, upstream: Mapping[str, str], out: Path, cfg: BundleConfig, *,
                      producer: dict[str, Any], evaluation: dict[str, Any] | None = None,
                      log: Callable[[str], None] = print):
    """The bundle of the exact checkpoint versions ``upstream`` (checkpoint asset -> data version), built
    into ``out``; a ``BuildResult`` with its content stats and its latency as run facts."""
    from ml.export import sources
    from ml.export.latency import latency_facts
    from ml.store import BuildResult

    models = sources.bundle_sources(store, upstream, cfg.samples)
    manifest = build_bundle(models, out, cfg, lineage=sources.walk_lineage(store, upstream), producer=producer,
                            evaluation=evaluation, log=log)
    return BuildResult(stats=bundle_stats(manifest), rows=len(models),
                       run_facts=latency_facts(read_latency(out)))
