"""The loss-curve PNG of a checkpoint (matplotlib Agg; small enough to inline in the Dagster UI)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Iterable


def loss_curve_png(metrics: Iterable[dict[str, Any]], title: str = "", headline: str | None = None) -> bytes:
    """Train and validation loss against step (log scale), plus a headline validation metric if given."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = list(metrics)

    def series(split: str, metric: str) -> tuple[list[int], list[float]]:
        pts = sorted((r["step"], r["value"]) for r in rows if r["split"] == split and r["metric"] == metric)
        return [s for s, _ in pts], [v for _, v in pts]

    fig, ax = plt.subplots(figsize=(4.8, 2.8), dpi=80)
    try:
        for split, style in (("train", "-"), ("val", "o--")):
            x, y = series(split, "loss")
            if x:
                ax.plot(x, y, style, label=f"{split} loss", markersize=3, linewidth=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if any(r["metric"] == "loss" and r["value"] > 0 for r in rows):
            from matplotlib.ticker import FormatStrFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
        if headline and headline != "loss":
            x, y = series("val", headline)
            if x:
                ax2 = ax.twinx()
                ax2.plot(x, y, "s:", color="tab:green", label=f"val {headline}", markersize=3, linewidth=1)
                ax2.set_ylabel(headline)
                lines = ax.get_legend_handles_labels()
                lines2 = ax2.get_legend_handles_labels()
                ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="best")
            else:
                ax.legend(fontsize=7)
        else:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def data_uri_markdown(png: bytes, alt: str = "loss curve") -> str:
    """Markdown that renders the PNG inline (Dagster's metadata markdown accepts data URIs)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def write_loss_curve(path: Path, metrics: Iterable[dict[str, Any]], title: str = "", headline: str | None = None) -> bytes:
    png = loss_curve_png(metrics, title, headline)
    Path(path).write_bytes(png)
    return png
