"""Parity of an ONNX model with its PyTorch checkpoint on stored sample inputs, and ORT latency.

numpy and onnxruntime only (no torch), so ``lineage verify`` re-runs the checks anywhere: ``samples.npz``
holds the inputs and the fp32 reference outputs. The criteria (``Thresholds``) and why the int4 ones
are set where they are: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

PRECISIONS = ("fp32", "int8", "int4")


@dataclass(frozen=True)
class Thresholds:
    fp32_max_abs_diff: float = 1e-4
    int8_embedding_mean_cosine: float = 0.99
    int8_embedding_min_cosine: float = 0.97
    int8_lm_top1_agreement: float = 0.95
    int8_classifier_agreement: float = 0.98
    int8_ranker_top1_agreement: float = 0.95
    int8_ranker_rank_correlation: float = 0.95
    int8_token_agreement: float = 0.98
    int4_lm_top1_agreement: float = 0.90
    int4_lm_max_logit_diff: float = 4.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Thresholds":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: float(v) for k, v in (d or {}).items() if k in known})

    def criteria(self, kind: str, precision: str) -> list[tuple[str, str, float]]:
        """(metric, comparison, threshold) that must all hold."""
        if precision == "fp32":
            return [("max_abs_diff", "<=", self.fp32_max_abs_diff)]
        if precision == "int4":
            if kind != "causal_lm":
                raise ValueError(f"int4 parity is defined for causal LMs only, not {kind!r}")
            return [("argmax_agreement", ">=", self.int4_lm_top1_agreement),
                    ("max_abs_diff", "<=", self.int4_lm_max_logit_diff)]
        if precision != "int8":
            raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
        if kind == "embedding":
            return [("cosine_mean", ">=", self.int8_embedding_mean_cosine),
                    ("cosine_min", ">=", self.int8_embedding_min_cosine)]
        if kind == "causal_lm":
            return [("argmax_agreement", ">=", self.int8_lm_top1_agreement)]
        if kind == "classifier":
            return [("argmax_agreement", ">=", self.int8_classifier_agreement)]
        if kind == "ranker":  # rows = queries, columns = candidate chunks
            return [("argmax_agreement", ">=", self.int8_ranker_top1_agreement),
                    ("rank_correlation_mean", ">=", self.int8_ranker_rank_correlation)]
        if kind == "token_classifier":  # rows = real tokens (padding left out), columns = tags
            return [("argmax_agreement", ">=", self.int8_token_agreement)]
        raise ValueError(f"unknown model kind {kind!r}")


def metrics(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """Row-wise agreement of ``output`` with ``reference`` ([samples, features] each)."""
    ref = reference.astype(np.float64)
    out = output.astype(np.float64)
    diff = np.abs(out - ref)
    num = (ref * out).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "argmax_agreement": float((ref.argmax(axis=1) == out.argmax(axis=1)).mean()),
    }


def compare(kind: str, precision: str, reference: np.ndarray, output: np.ndarray, thresholds: Thresholds) -> dict[str, Any]:
    """The parity result of one model at one precision: metrics, each criterion, passed."""
    result: dict[str, Any] = {"kind": kind, "precision": precision, "samples": int(len(reference))}
    problems = []
    if output.shape != reference.shape:
        problems.append(f"output shape {list(output.shape)} != reference shape {list(reference.shape)}")
    elif not np.isfinite(output).all():
        problems.append(f"{int((~np.isfinite(output)).sum())} non-finite output values")
    result["metrics"] = metrics(reference, output) if not problems else {}
    if kind == "ranker" and not problems:
        result["metrics"]["rank_correlation_mean"] = rank_correlation(reference, output)
    criteria = []
    for metric, op, threshold in thresholds.criteria(kind, precision):
        value = result["metrics"].get(metric)
        ok = value is not None and (value <= threshold if op == "<=" else value >= threshold)
        criteria.append({"metric": metric, "op": op, "threshold": threshold, "value": value, "passed": bool(ok)})
        if not ok and value is not None:
            problems.append(f"{metric} = {value:.6g}, needs {op} {threshold:g}")
    result["criteria"] = criteria
    result["problems"] = problems
    result["passed"] = not problems
    return result


def rank_correlation(reference: np.ndarray, output: np.ndarray) -> float:
    """Mean Spearman correlation of the candidate orders per row (1.0 when a row is constant in both)."""
    def ranks(a):
        return np.argsort(np.argsort(a, axis=1, kind="stable"), axis=1).astype(np.float64)
    r, o = ranks(reference.astype(np.float64)), ranks(output.astype(np.float64))
    r -= r.mean(axis=1, keepdims=True)
    o -= o.mean(axis=1, keepdims=True)
    den = np.sqrt((r * r).sum(axis=1) * (o * o).sum(axis=1))
    return float(np.where(den > 0, (r * o).sum(axis=1) / np.maximum(den, 1e-300), 1.0).mean())


# ---- samples.npz ----------------------------------------------------------------------------
def save_samples(path: Path, *, reference: np.ndarray, texts: list[str], input_ids: np.ndarray | None = None,
                 attention_mask: np.ndarray | None = None, feeds: dict[str, np.ndarray] | None = None) -> None:
    """Inputs, the PyTorch fp32 outputs and the texts they came from (no pickled objects).

    Token models store ``input_ids`` and ``attention_mask``; graph models (the GNN ranker) store their
    named inputs (``feeds``) and the list of names (``feed_names``): one ORT call on all of them."""
    arrays: dict[str, np.ndarray] = {"reference": reference.astype(np.float32), "texts": np.array(texts, dtype=np.str_)}
    if feeds:
        arrays.update({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        arrays["feed_names"] = np.array(list(feeds), dtype=np.str_)
    else:
        arrays.update(input_ids=input_ids.astype(np.int64), attention_mask=attention_mask.astype(np.int64))
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_samples(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        names = [str(n) for n in z["feed_names"]] if "feed_names" in z.files else ["input_ids", "attention_mask"]
        missing = {*names, "reference"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: samples file lacks {sorted(missing)}")
        return {k: z[k] for k in z.files}


# ---- ONNX Runtime ---------------------------------------------------------------------------
def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ort_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_outputs(session, input_ids: np.ndarray, attention_mask: np.ndarray, batch_size: int = 16) -> np.ndarray:
    outs = []
    for lo in range(0, len(input_ids), batch_size):
        feeds = {"input_ids": input_ids[lo: lo + batch_size].astype(np.int64),
                 "attention_mask": attention_mask[lo: lo + batch_size].astype(np.int64)}
        outs.append(session.run(None, feeds)[0])
    return np.concatenate(outs, axis=0).astype(np.float32)


def check_onnx(path: Path, kind: str, precision: str, samples: dict[str, np.ndarray], thresholds: Thresholds,
               threads: int = 0) -> dict[str, Any]:
    """Run the stored sample inputs through ``path`` in ORT and compare with the stored reference."""
    session = ort_session(path, threads)
    reference = samples["reference"]
    if "feed_names" in samples:  # a graph model: one call with its stored named inputs
        out = session.run(None, {str(n): samples[str(n)] for n in samples["feed_names"]})[0].astype(np.float32)
    else:
        out = ort_outputs(session, samples["input_ids"], samples["attention_mask"])
    if kind == "token_classifier" and out.shape == reference.shape:  # one row per real token
        real = samples["attention_mask"].astype(bool)
        reference, out = reference[real], out[real]
    return compare(kind, precision, reference, out, thresholds)


def median_ms(fn: Callable[[], Any], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def latency_feeds(vocab_size: int, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, vocab_size, size=(batch, seq), dtype=np.int64),
            "attention_mask": np.ones((batch, seq), dtype=np.int64)}


def ort_latency_ms(session, feeds: dict[str, np.ndarray], runs: int) -> float:
    return median_ms(lambda: session.run(None, feeds), runs)
