"""The ONNX bundle: build it, describe it (manifest.json), package it (.tar.gz), verify it.

Layout of a bundle (``bundle/`` in the store's version directory, and the members of
``bundle.tar.gz`` beside it)::

    manifest.json                 models, files (sha256, bytes), parity, latency, versions, lineage
    parity.json                   per model, per precision: metrics, criteria, passed
    <model>/model.onnx            fp32
    <model>/model.int8.onnx       INT8 dynamic quantization (absent with skip_quantization)
    <model>/model.int4.onnx       causal LMs: int4 weight-only MatMulNBits (ml/export/int4.py; absent
                                  with int4: false; every other model's manifest entry says why not)
    <model>/tokenizer/            the tokenizer the model was trained with
    <model>/samples.npz           input_ids, attention_mask (graph models: their named inputs and
                                  feed_names), PyTorch fp32 reference outputs, texts

The tarball is deterministic (sorted regular-file members, mtime 0, uid/gid 0, no gzip name or
time), so the same files give the same bytes. ``verify_bundle`` extracts it safely (no absolute
paths, ``..``, links or device files), checks every sha256 and re-runs the parity samples in ORT.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import platform
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable

import numpy as np

from ml.export import parity as P
from ml.export.quantize import PER_CHANNEL_MODES
from ml.fsutil import atomic_write_json, sha256_file
from ml.store import MANIFEST, list_files  # list_files leaves MANIFEST out

FORMAT = "lineage-forge/onnx-bundle/1"
BUNDLE_DIR = "bundle"
TARBALL = "bundle.tar.gz"
PARITY = "parity.json"
FP32, INT8, SAMPLES, TOKENIZER = "model.onnx", "model.int8.onnx", "samples.npz", "tokenizer"
ENGINES = ("torch_fp32", "ort_fp32", "ort_int8")
MAX_EXTRACT_BYTES = 64 << 30


class BundleError(ValueError):
    pass


class UnsafeBundleError(BundleError):
    """A tarball member that could write outside the extraction directory or is not a plain file."""


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
    thresholds: P.Thresholds = field(default_factory=P.Thresholds)
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


def _export_one(src, mdir: Path, cfg: BundleConfig, log: Callable[[str], None]) -> tuple[dict, dict]:
    """Export, quantize, check and time one model into ``mdir``; (manifest entry, parity results)."""
    from ml.export import export as E
    from ml.export import quantize as Q

    threads = cfg.threads or P.default_threads()
    mdir.mkdir(parents=True)
    model = E.load_model(src)
    module = E.wrap(src, model)
    info = E.model_info(src, model)
    tok = E.load_tokenizer(src.tokenizer_dir)
    max_len = min(cfg.max_length, info["max_positions"]) if info["max_positions"] else cfg.max_length
    graph = src.kind in E.GRAPH_KINDS

    if graph:  # the GNN ranker: samples are subgraphs (ml/gnn/export.py), texts are their queries
        from ml.gnn import export as G

        feeds, texts, from_split = G.sample_batch(src.graph["dataset_dir"], src.graph["embedding_dir"], cfg.samples,
                                                  src.graph["feature_max_len"])
        cut = False
        with E.torch_threads(threads):
            reference = G.torch_scores(module, feeds)
        src.provenance.setdefault("samples_from_split", from_split)
        P.save_samples(mdir / SAMPLES, feeds=feeds, reference=reference, texts=texts)
    else:
        texts = src.texts[: cfg.samples]
        cut = src.cut_samples[: cfg.samples] if isinstance(src.cut_samples, list) else src.cut_samples
        enc = E.encode_samples(tok, texts, max_length=max_len, cut=cut)
        with E.torch_threads(threads):
            reference = E.torch_outputs(module, enc["input_ids"], enc["attention_mask"])
        used = [tok.decode(ids[m == 1].tolist()) for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
        P.save_samples(mdir / SAMPLES, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       reference=reference, texts=used)
    samples = P.load_samples(mdir / SAMPLES)

    log(f"{src.name}: exporting {info['architecture']} ({info['parameters']:,} parameters) to ONNX")
    if graph:
        export_info = G.export_onnx(module, feeds, mdir / FP32, opset=cfg.opset)
    else:
        export_info = E.export_onnx(module, mdir / FP32, kind=src.kind, vocab_size=info["vocab_size"], opset=cfg.opset)
    tok_files = _copy_tree(Path(src.tokenizer_dir), mdir / TOKENIZER)
    results = {"fp32": P.check_onnx(mdir / FP32, src.kind, "fp32", samples, cfg.thresholds, threads)}

    quant: dict[str, Any] | None = None
    if not cfg.skip_quantization:
        with tempfile.TemporaryDirectory(prefix=f"int8-{src.name}-") as tmp:
            pre = Path(tmp) / "pre.onnx"
            method = Q.preprocess(mdir / FP32, pre)
            tried = []
            for emb in Q.candidates(cfg.quantize_embeddings, "quantize_embeddings"):
                for per_channel in Q.candidates(cfg.per_channel):
                    name = Q.candidate_name(per_channel, emb)
                    path = Path(tmp) / f"int8-{name}.onnx"
                    qinfo = Q.quantize_int8(pre, path, per_channel=per_channel, reduce_range=cfg.reduce_range,
                                            quantize_embeddings=emb)
                    res = P.check_onnx(path, src.kind, "int8", samples, cfg.thresholds, threads)
                    tried.append((name, qinfo, res, path))
                    log(f"{src.name}: INT8 {name}: {_summary(res)}")
            name, qinfo, res, path = max(tried, key=lambda t: _int8_rank(t[1], t[2]))
            shutil.copyfile(path, mdir / INT8)
        quant = {**qinfo, "preprocess": method, "mode": cfg.per_channel, "embeddings_mode": cfg.quantize_embeddings,
                 "chosen": name, "candidates": {n: _summary(r) for n, _, r, _ in tried}}
        results["int8"] = {**res, "per_channel": qinfo["per_channel"], "quantize_embeddings": qinfo["quantize_embeddings"]}

    from ml.export import int4 as I4

    quant4, res4 = I4.build(src.kind, mdir, samples, cfg, threads, log, name=src.name)
    if res4 is not None:
        results["int4"] = res4
    has4 = (mdir / I4.FILE).is_file()

    latency: dict[str, dict[str, float]] = {}
    if cfg.measure_latency:
        seq = min(cfg.latency_seq, info["max_positions"]) if info["max_positions"] else cfg.latency_seq
        del module, model  # the torch baseline: eager mode with transformers' default attention (SDPA)
        gc.collect()
        model = E.load_model(src, attn_implementation=None)
        module = E.wrap(src, model)
        sessions = {"ort_fp32": P.ort_session(mdir / FP32, threads)}
        if quant:
            sessions["ort_int8"] = P.ort_session(mdir / INT8, threads)
        if has4:
            sessions[I4.ENGINE] = P.ort_session(mdir / I4.FILE, threads)
        shapes = [(f"b{len(samples['query'])}graph", None)] if graph else \
            [(f"b{batch}s{seq}", P.latency_feeds(info["vocab_size"], batch, seq)) for batch in cfg.latency_batches]
        for shape, feeds in shapes:
            if graph:  # the stored sample graph: every sample query in one batch
                feeds = {str(k): samples[str(k)] for k in samples["feed_names"]}
                with E.torch_threads(threads):
                    row = {"torch_fp32": P.median_ms(lambda: G.torch_scores(module, feeds), cfg.latency_runs)}
            else:
                row = {"torch_fp32": E.torch_latency_ms(module, feeds, cfg.latency_runs, threads)}
            for engine, sess in sessions.items():
                row[engine] = P.ort_latency_ms(sess, feeds, cfg.latency_runs)
            latency[shape] = {k: round(v, 4) for k, v in row.items()}
        log(f"{src.name}: latency (ms, median of {cfg.latency_runs}, {threads} threads): {latency}")

    sizes = {"fp32": (mdir / FP32).stat().st_size}
    if quant:
        sizes["int8"] = (mdir / INT8).stat().st_size
        sizes["int8_ratio"] = round(sizes["int8"] / sizes["fp32"], 4)
    if has4:
        sizes["int4"] = (mdir / I4.FILE).stat().st_size
        sizes["int4_ratio"] = round(sizes["int4"] / sizes["fp32"], 4)
    entry = {
        **info,
        "source": src.provenance,
        "files": {"fp32": f"{src.name}/{FP32}", **({"int8": f"{src.name}/{INT8}"} if quant else {}),
                  **({"int4": f"{src.name}/{I4.FILE}"} if has4 else {}),
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
        "latency_ms": latency,
        "latency_setup": {"runs": cfg.latency_runs, "statistic": "median", "threads": threads,
                          "inputs": "random ids, full attention mask",
                          "engines": {"torch_fp32": "PyTorch eager mode, default attention, fp32",
                                      "ort_fp32": "ONNX Runtime CPU, model.onnx",
                                      "ort_int8": "ONNX Runtime CPU, model.int8.onnx",
                                      **({I4.ENGINE: f"ONNX Runtime CPU, {I4.FILE}"} if has4 else {})}}
        if latency else None,
        "bytes": sizes,
    }
    del module, model
    gc.collect()
    return entry, results


def build_bundle(sources: list, out: Path, cfg: BundleConfig, *, lineage: dict[str, Any],
                 producer: dict[str, Any] | None = None, log: Callable[[str], None] = print,
                 evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out/bundle/`` and ``out/bundle.tar.gz`` for the model sources; returns the manifest.
    ``evaluation``: the models' held-out test figures (model_evaluation), carried as the manifest's
    ``evaluation`` (null when none measured these model versions)."""
    names = [s.name for s in sources]
    if not sources or len(set(names)) != len(names):
        raise BundleError(f"a bundle needs one or more models with distinct names, got {names}")
    root = Path(out) / BUNDLE_DIR
    root.mkdir(parents=True)
    models, report = {}, {}
    for src in sources:
        models[src.name], report[src.name] = _export_one(src, root / src.name, cfg, log)
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
    return manifest


def bundle_stats(manifest: dict[str, Any]) -> dict[str, float]:
    """Flat numbers for the catalog's dataset_stats (latency_ms.<model>.<engine>.<shape>, bytes.<model>.<prec>, ...)."""
    stats: dict[str, float] = {"models": len(manifest["models"]), "parity_passed": float(manifest["parity"]["passed"])}
    for name, m in manifest["models"].items():
        for prec, size in m["bytes"].items():
            stats[f"bytes.{name}.{prec}"] = size
        for shape, row in m["latency_ms"].items():
            for engine, ms in row.items():
                stats[f"latency_ms.{name}.{engine}.{shape}"] = ms
            if "ort_int8" in row and row["ort_int8"] > 0:
                stats[f"speedup.{name}.ort_int8_vs_torch_fp32.{shape}"] = round(row["torch_fp32"] / row["ort_int8"], 4)
            if row.get("ort_int4", 0) > 0:
                stats[f"speedup.{name}.ort_int4_vs_torch_fp32.{shape}"] = round(row["torch_fp32"] / row["ort_int4"], 4)
        for prec, summary in m["parity"].items():
            for k, v in summary.items():
                if v is not None:
                    stats[f"parity.{name}.{prec}.{k}"] = float(v)
    return stats


# ---- packaging ------------------------------------------------------------------------------
def pack_tar(src_dir: Path, tar_path: Path) -> None:
    """Deterministic .tar.gz of the regular files under src_dir (relative, sorted, fixed metadata)."""
    src_dir = Path(src_dir)
    files = sorted(p.relative_to(src_dir).as_posix() for p in src_dir.rglob("*") if not p.is_dir())
    fd, tmp = tempfile.mkstemp(dir=Path(tar_path).parent, prefix=f".{Path(tar_path).name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
                    for rel in files:
                        path = src_dir / rel
                        if path.is_symlink() or not path.is_file():
                            raise BundleError(f"{path} is not a regular file")
                        ti = tarfile.TarInfo(rel)
                        ti.size = path.stat().st_size
                        ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0o644, 0, 0, "", ""
                        with open(path, "rb") as f:
                            tf.addfile(ti, f)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, tar_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_member_name(name: str) -> str:
    """A member name that stays inside the extraction directory, or UnsafeBundleError."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeBundleError(f"unsafe member name {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or PureWindowsPath(name).drive:
        raise UnsafeBundleError(f"member {name!r} has an absolute path")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise UnsafeBundleError(f"member {name!r} has a '..', '.' or empty path component")
    return name


def safe_extract(tar_path: Path, dest: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> list[str]:
    """Extract regular files only, each to a checked path under dest; returns the member names."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    names: list[str] = []
    total = 0
    try:
        tf = tarfile.open(tar_path, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{tar_path} is not a readable .tar.gz: {exc}") from exc
    with tf:
        try:
            for m in tf:
                check_member_name(m.name)
                if m.issym() or m.islnk():
                    raise UnsafeBundleError(f"member {m.name!r} is a link (to {m.linkname!r}); links are refused")
                if m.isdir():
                    continue
                if not m.isreg():
                    raise UnsafeBundleError(f"member {m.name!r} is not a regular file (device, fifo or other)")
                if m.name in names:
                    raise UnsafeBundleError(f"member {m.name!r} appears twice")
                total += m.size
                if total > max_bytes:
                    raise UnsafeBundleError(f"archive expands to more than {max_bytes} bytes")
                target = (root / m.name).resolve()
                if not target.is_relative_to(root):
                    raise UnsafeBundleError(f"member {m.name!r} resolves outside {root}")
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                with open(target, "xb") as out:  # never follows or overwrites anything
                    shutil.copyfileobj(src, out)
                os.chmod(target, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
                names.append(m.name)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:  # gzip.BadGzipFile is an OSError
            raise BundleError(f"cannot extract {tar_path}: {exc}") from exc
    return names


# ---- verification ---------------------------------------------------------------------------
@dataclass
class VerifyReport:
    checks: list[tuple[bool, str]] = field(default_factory=list)

    def add(self, ok: bool, message: str) -> bool:
        self.checks.append((bool(ok), message))
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks)

    def render(self) -> str:
        return "\n".join(f"{'ok  ' if ok else 'FAIL'} {msg}" for ok, msg in self.checks)


def verify_bundle(tar_path: Path, threads: int = 0, keep: Path | None = None) -> VerifyReport:
    """Safe extraction, every sha256, onnx.checker, and the parity samples re-run in ORT."""
    report = VerifyReport()
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        dest = Path(keep) if keep else Path(tmp) / "bundle"
        if keep and dest.exists() and any(dest.iterdir()):
            report.add(False, f"--keep directory {dest} is not empty")
            return report
        try:
            members = safe_extract(tar_path, dest)
        except BundleError as exc:
            report.add(False, f"extraction refused: {exc}")
            return report
        report.add(True, f"extracted {len(members)} regular files safely")
        _verify_tree(dest, members, report, threads)
    return report


def _verify_tree(root: Path, members: list[str], report: VerifyReport, threads: int) -> None:
    import onnx

    if MANIFEST not in members:
        report.add(False, f"no {MANIFEST} in the bundle")
        return
    try:
        manifest = json.loads((root / MANIFEST).read_text("utf-8"))
        listed = {f["path"]: f for f in manifest["files"]}
        models = manifest["models"]
    except (ValueError, KeyError, TypeError) as exc:
        report.add(False, f"{MANIFEST} is unreadable: {exc}")
        return
    if manifest.get("format") != FORMAT:
        report.add(False, f"unknown bundle format {manifest.get('format')!r} (expected {FORMAT})")
    bad = 0
    for rel, f in sorted(listed.items()):
        try:
            check_member_name(rel)
        except UnsafeBundleError as exc:
            bad += not report.add(False, f"manifest lists an unsafe path: {exc}")
            continue
        path = root / rel
        if not path.is_file():
            bad += not report.add(False, f"{rel}: listed in the manifest but missing")
        elif path.stat().st_size != f["bytes"] or sha256_file(path) != f["sha256"]:
            bad += not report.add(False, f"{rel}: sha256/size differs from the manifest (tampered or corrupt)")
    for rel in sorted(set(members) - set(listed) - {MANIFEST}):
        bad += not report.add(False, f"{rel}: in the archive but not in the manifest")
    report.add(bad == 0, f"sha256 of {len(listed)} files" + ("" if bad == 0 else f": {bad} problem(s)"))
    if bad:
        return  # never load files that are not the ones the manifest describes

    try:
        thresholds = P.Thresholds.from_dict(json.loads((root / PARITY).read_text("utf-8"))["thresholds"])
    except (OSError, ValueError, KeyError) as exc:
        report.add(False, f"{PARITY} is unreadable: {exc}")
        return
    for name, m in sorted(models.items()):
        files = {k: v for k, v in m.get("files", {}).items() if k in ("samples", *P.PRECISIONS)}
        stray = [v for v in files.values() if v not in listed]
        if stray or "samples" not in files or "fp32" not in files:
            report.add(False, f"{name}: model files {stray or sorted(files)} are not (all) listed bundle files")
            continue
        try:
            samples = P.load_samples(root / files["samples"])
        except (OSError, ValueError, KeyError) as exc:
            report.add(False, f"{name}: samples unreadable: {exc}")
            continue
        for prec in P.PRECISIONS:
            rel = files.get(prec)
            if rel is None:
                if prec == "int8" and m.get("quantization") is not None:
                    report.add(False, f"{name}: manifest says quantized but lists no int8 file")
                continue
            try:
                proto = onnx.load(str(root / rel), load_external_data=False)
                if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
                    report.add(False, f"{name} {prec}: {rel} refers to external data files (not allowed in a bundle)")
                    continue
                onnx.checker.check_model(proto)
                res = P.check_onnx(root / rel, m["kind"], prec, samples, thresholds, threads)
            except Exception as exc:  # onnx / ORT raise many types; any of them fails verification
                report.add(False, f"{name} {prec}: cannot load or run {rel} in ONNX Runtime: {exc}")
                continue
            figures = ", ".join(f"{c['metric']}={c['value']:.6g} ({c['op']} {c['threshold']:g})"
                                for c in res["criteria"] if c["value"] is not None)
            report.add(res["passed"], f"{name} {prec}: parity on {res['samples']} stored samples: "
                       + (figures or "; ".join(res["problems"])))
