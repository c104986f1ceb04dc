"""Pure metric functions of the held-out evaluation (no torch, no Dagster): text answers,
retrieval ranks, classification with its confusion matrix."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

import numpy as np

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """SQuAD-style: lower case, punctuation removed, whitespace collapsed."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def token_f1(pred: str, gold: str) -> float:
    """F1 of the normalized word multisets (SQuAD); both empty: 1, one empty: 0."""
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def retrieval_metrics(sim: np.ndarray, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """``sim[i, j]``: score of document j for query i, the right document of query i is j = i.
    Ties count against the right document (its rank is 1 + the number of documents scoring >= it,
    other than itself)."""
    sim = np.asarray(sim, dtype=np.float64)
    n = sim.shape[0]
    if n == 0:
        return {**{f"recall_at_{k}": float("nan") for k in ks}, "mrr": float("nan")}
    pos = sim[np.arange(n), np.arange(n)][:, None]
    rank = 1 + (sim >= pos).sum(axis=1) - 1  # itself excluded
    out = {f"recall_at_{k}": float((rank <= k).mean()) for k in ks}
    out["mrr"] = float((1.0 / rank).mean())
    return out


def confusion_matrix(gold: Sequence[int], pred: Sequence[int], n_labels: int) -> np.ndarray:
    """``m[g, p]``: examples of gold label g predicted as p."""
    m = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(m, (np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return m


def classification_metrics(m: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1 (over the labels that occur in gold or predictions) of a confusion matrix."""
    total = int(m.sum())
    tp = np.diag(m).astype(np.float64)
    fp, fn = m.sum(axis=0) - tp, m.sum(axis=1) - tp
    present = (m.sum(axis=0) + m.sum(axis=1)) > 0
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"accuracy": float(tp.sum() / total) if total else float("nan"),
            "macro_f1": float(f1[present].mean()) if present.any() else float("nan")}


def confusion_png(m: np.ndarray, labels: Sequence[str], title: str) -> bytes:
    """The confusion matrix as a PNG (rows: gold, columns: predicted; only labels that occur)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = np.where((m.sum(axis=0) + m.sum(axis=1)) > 0)[0]
    sub = m[np.ix_(keep, keep)]
    names = [labels[i] for i in keep]
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(sub, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=9)
    for i in range(sub.shape[0]):
        for j in range(sub.shape[1]):
            if sub[i, j]:
                ax.text(j, i, str(int(sub[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if sub[i, j] > sub.max() / 2 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
