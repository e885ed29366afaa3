"""The eval report: per candidate top-1/top-k with Wilson intervals, the paired comparison with the reference
(exact McNemar), decoding and inference throughput; as a dict (``eval.json``), a table, and one PNG."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

from msmlp.evaluate.datasets import LabelledSet
from msmlp.evaluate.stats import mcnemar_exact, wilson
from msmlp.evaluate.stream import TOP_K, Candidate, Progress, Tally
from msmlp.fileio import atomic_path, write_text_atomic

FORMAT = "msmlp-eval/1"
MAX_NAMES_SHOWN = 20  # the table lists the class names of small label sets


def build_report(
    data: LabelledSet,
    candidates: list[Candidate],
    tallies: list[Tally],
    progress: Progress,
    *,
    reference: int,
    batch: int,
    workers: int,
) -> dict[str, Any]:
    """Everything ``eval.json`` holds; statistics over the images every candidate scored."""
    done = progress.done
    n = int(done.sum())
    ref = tallies[reference]
    rows = []
    for cand, tally in zip(candidates, tallies):
        top1, topk = int(tally.top1[done].sum()), int(tally.topk[done].sum())
        gained = int((tally.top1 & ~ref.top1 & done).sum())
        lost = int((~tally.top1 & ref.top1 & done).sum())
        rows.append(
            {
                "label": cand.label,
                "reference": cand is candidates[reference],
                **cand.describe,
                "classes": cand.classes,
                "top1": _rate(top1, n),
                "top1_ci95": list(wilson(top1, n)),
                "top1_correct": top1,
                f"top{TOP_K}": _rate(topk, n),
                f"top{TOP_K}_ci95": list(wilson(topk, n)),
                f"top{TOP_K}_correct": topk,
                "vs_reference": {
                    "gained": gained,
                    "lost": lost,
                    "top1_delta_points": round(100 * (top1 - int(ref.top1[done].sum())) / n, 4)
                    if n
                    else None,
                    "agreement": _rate(int((tally.pred == ref.pred)[done].sum()), n),
                    "mcnemar_p": mcnemar_exact(gained, lost),
                },
                "inference_s": round(tally.infer_s, 4),
                "inference_images_per_s": round(n / tally.infer_s, 2) if tally.infer_s else None,
                "ms_per_batch": round(1000 * tally.infer_s / tally.calls, 3) if tally.calls else None,
            }
        )
    return {
        "format": FORMAT,
        "partial": progress.partial,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "source": str(data.source),
            "layout": data.layout,
            "images": len(data),
            "classes": data.num_classes,
            # the names of a set's own classes; ImageNet's 1000 WordNet IDs go without saying
            **({"class_names": list(data.class_names)} if _own_names(data) else {}),
        },
        "images_scored": n,
        "unreadable": progress.unreadable_count,
        "unreadable_files": progress.unreadable,
        "batch": batch,
        "decode": {
            "workers": workers,
            "worker_s": round(progress.decode_s, 4),
            "images_per_s_per_worker": round(n / progress.decode_s, 2) if progress.decode_s else None,
        },
        "wall_s": round(progress.wall_s, 3),
        "images_per_s": round(n / progress.wall_s, 2) if progress.wall_s else None,
        "cpu": _cpu(),
        "candidates": rows,
    }


def _own_names(data: LabelledSet) -> bool:
    return bool(data.class_names) and not data.layout.startswith("imagenet")


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def table(report: dict[str, Any]) -> str:
    """The stdout table: one row per candidate."""
    k = f"top{TOP_K}"
    head = (
        f"{'candidate':<44} {'top-1 % (95% CI)':>22} {'top-5 % (95% CI)':>22} "
        f"{'+ref':>5} {'-ref':>5} {'McNemar p':>9} {'img/s':>8}"
    )
    lines = [head, "-" * len(head)]
    for row in report["candidates"]:
        vs = row["vs_reference"]
        name = row["label"] + (" (ref)" if row["reference"] else "")
        lines.append(
            f"{name[:44]:<44} {_pct(row['top1'], row['top1_ci95']):>22} {_pct(row[k], row[k + '_ci95']):>22} "
            f"{vs['gained']:>5} {vs['lost']:>5} {vs['mcnemar_p']:>9.3g} {row['inference_images_per_s'] or 0:>8.1f}"
        )
    d = report["decode"]
    lines.append(
        f"{report['images_scored']} images ({report['data']['layout']}), {report['unreadable']} unreadable; "
        f"decoding {d['images_per_s_per_worker'] or 0:.1f} img/s per worker x {d['workers']}, "
        f"end to end {report['images_per_s'] or 0:.1f} img/s; img/s above is inference only"
        + ("; PARTIAL (interrupted)" if report["partial"] else "")
    )
    names = report["data"].get("class_names") or []
    if names and len(names) <= MAX_NAMES_SHOWN:
        lines.append("classes: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)))
    return "\n".join(lines)


def _pct(rate: float | None, ci: list[float]) -> str:
    if rate is None:
        return "-"
    return f"{100 * rate:.2f} ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})"


def write_report(report: dict[str, Any], path: Path) -> Path:
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")
    return path


def plot_accuracy(report: dict[str, Any], path: Path) -> Path:
    """Top-1 (with its 95 % interval) against inference latency per image, one point per candidate."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(1, 1)
    for row in report["candidates"]:
        if row["top1"] is None or not row["inference_images_per_s"]:
            continue
        x = 1000 / row["inference_images_per_s"]
        y = 100 * row["top1"]
        lo, hi = (100 * v for v in row["top1_ci95"])
        ax.errorbar(
            [x], [y], yerr=[[max(0.0, y - lo)], [max(0.0, hi - y)]], fmt="o", capsize=4, label=row["label"]
        )
        ax.annotate(f"{y:.1f}%", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel(f"inference latency, ms per image (batch {report['batch']})")
    ax.set_ylabel("top-1 accuracy, % (95% Wilson interval)")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    partial = " (partial)" if report["partial"] else ""
    fig.suptitle(
        f"{report['images_scored']} images, {report['data']['layout']}{partial}\n{report['cpu']}", fontsize=10
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def reference_index(candidates: list[Candidate], forced: int | None = None) -> int:
    """The reference: the one given, else the first FP32 candidate, else the first."""
    if forced is not None:
        return forced
    fp32 = [i for i, c in enumerate(candidates) if c.describe.get("precision") == "fp32"]
    return fp32[0] if fp32 else 0


__all__ = ["build_report", "plot_accuracy", "reference_index", "table", "write_report"]
