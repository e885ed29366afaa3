"""PNGs for diagnosis: error against depth (one line per candidate) and the mixed-precision trade-off
(held-out cosine against measured latency). Drawn on matplotlib's Agg canvas, no pyplot state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msmlp.diagnose.compare import LayerReport

FLOOR = 1e-9  # 1 - cosine below this is drawn at the floor (log axis)


def plot_depth(reports: Sequence[LayerReport], path: str | Path) -> Path:
    """1 - mean cosine (log) against layer depth, one line per candidate; the first layer that crosses
    the threshold is marked, and block boundaries are labelled along the top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(1, 1)
    for report in reports:
        xs = [s.depth for s in report.layers]
        ys = [max(s.error, FLOOR) for s in report.layers]
        worst = [max(1 - s.cosine, FLOOR) for s in report.layers]
        label = f"{Path(str(report.candidate['file'])).name} on {report.candidate['backend']}"
        (line,) = ax.plot(xs, ys, marker=".", markersize=3, linewidth=1.2, label=f"{label} (mean)")
        ax.plot(xs, worst, linewidth=0.6, alpha=0.5, color=line.get_color(), label=f"{label} (worst sample)")
        crossing = report.first_crossing
        if crossing is not None:
            ax.axvline(crossing.depth, color=line.get_color(), linestyle=":", linewidth=1)
            ax.annotate(
                f"first < {report.threshold}: {crossing.group}",
                (crossing.depth, max(crossing.error, FLOOR)),
                textcoords="offset points",
                xytext=(4, 8),
                fontsize=8,
                color=line.get_color(),
            )
    if reports:
        threshold = reports[0].threshold
        ax.axhline(1 - threshold, color="grey", linestyle="--", linewidth=0.8, label=f"1 - {threshold}")
        _group_ticks(ax, reports[0])
    ax.set_yscale("log")
    ax.set_xlabel("layer depth (watched tensors in graph order)")
    ax.set_ylabel("1 - cosine vs FP32")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("error against depth", fontsize=12)
    fig.savefig(path, format="png")
    return Path(path)


def _group_ticks(ax: Any, report: LayerReport) -> None:
    """Secondary x axis naming where each block starts (at most ~12 labels)."""
    starts: dict[str, int] = {}
    for s in report.layers:
        block = s.group.split("/")[0]
        starts.setdefault(block, s.depth)
    items = list(starts.items())
    step = max(1, len(items) // 12)
    top = ax.secondary_xaxis("top")
    top.set_xticks([d for _, d in items[::step]])
    top.set_xticklabels([b for b, _ in items[::step]], rotation=35, fontsize=7, ha="left")


def plot_tradeoff(configs: Sequence[dict[str, Any]], target: float | None, path: str | Path) -> Path:
    """Held-out cosine (as 1 - cosine, log) against measured latency, one point per configuration tried;
    the chosen one is ringed; ``target`` (a cosine, None for an accuracy budget) drawn as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(1, 1)
    for c in configs:
        y = max(1 - c["cosine"], FLOOR)
        ax.scatter([c["latency_ms"]], [y], s=30, color="tab:red" if c["name"] == "fp32" else "tab:blue")
        ax.annotate(c["name"], (c["latency_ms"], y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if c.get("chosen"):
            ax.scatter([c["latency_ms"]], [y], s=160, facecolors="none", edgecolors="tab:green", linewidths=2)
    if target is not None:
        ax.axhline(1 - target, color="grey", linestyle="--", linewidth=0.8, label=f"target cosine {target}")
    ax.set_yscale("log")
    ax.set_xlabel("latency per batch, ms (ONNX Runtime CPU)")
    ax.set_ylabel("1 - held-out cosine (worst sample) vs FP32")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.suptitle("INT8 mixed precision: accuracy against speed", fontsize=12)
    fig.savefig(path, format="png")
    return Path(path)
