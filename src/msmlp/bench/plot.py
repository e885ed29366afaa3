"""``bench.png``: latency and throughput against batch size, the latency distribution of a service run,
or the backend comparison. Drawn on matplotlib's Agg canvas directly (no pyplot global state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PALETTE = ("tab:gray", "tab:blue", "tab:purple", "tab:green", "tab:orange", "tab:brown", "tab:red")


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """Latency (p50/p90/p99) and throughput against batch size, side by side; for a service-only run,
    the latency distribution. Uses matplotlib's Agg canvas directly (no pyplot global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if report.get("compare"):
        plot_compare(report, path)
        return
    fig = Figure(figsize=(12, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    results = report.get("results") or []
    if results:
        left, right = fig.subplots(1, 2)
        _plot_latency(left, results)
        _plot_throughput(right, results, report.get("concurrency"))
    else:
        _plot_distribution(fig.subplots(1, 1), report.get("concurrency") or {})
    fig.suptitle(_plot_title(report), fontsize=12)
    fig.savefig(path, format="png")


def _short(value: float) -> str:
    """A label for a plotted point: 3 significant digits without exponents (0.444, 12.3, 2,885)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _batch_axis(ax: Any, batches: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches)
    ax.set_xticklabels([str(b) for b in batches])
    ax.set_xlabel("batch size (images per call)")
    ax.grid(True, which="major", alpha=0.3)


def _plot_latency(ax: Any, results: list[dict[str, Any]]) -> None:
    batches = [r["batch"] for r in results]
    ax.fill_between(
        batches,
        [r["p50_ms"] for r in results],
        [r["p99_ms"] for r in results],
        color="tab:blue",
        alpha=0.12,
        label="p50–p99 spread",
    )
    ax.plot(batches, [r["p50_ms"] for r in results], "o-", color="tab:blue", label="p50")
    ax.plot(batches, [r["p90_ms"] for r in results], "s--", color="tab:orange", label="p90", markersize=4)
    ax.plot(batches, [r["p99_ms"] for r in results], "^:", color="tab:red", label="p99")
    if all(r.get("gpu") for r in results):
        ax.plot(
            batches,
            [r["gpu"]["p50_ms"] for r in results],
            "d-.",
            color="tab:green",
            label="p50 (CUDA events)",
        )
    for b, r in zip(batches, results):
        ax.annotate(
            _short(r["p50_ms"]),
            (b, r["p50_ms"]),
            textcoords="offset points",
            xytext=(5, 5),
            ha="left",
            fontsize=8,
            color="tab:blue",
        )
    _batch_axis(ax, batches)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("latency per call (ms)")
    ax.set_title("Latency per backend call")
    ax.legend(loc="upper left")


def _plot_throughput(ax: Any, results: list[dict[str, Any]], concurrency: dict[str, Any] | None) -> None:
    batches = [r["batch"] for r in results]
    values = [r["throughput_ips"] for r in results]
    ax.plot(batches, values, "o-", color="tab:purple", label="direct calls at this batch")
    for b, v in zip(batches, values):
        ax.annotate(_short(v), (b, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    if concurrency and concurrency.get("answered"):
        info = concurrency.get("batcher") or {}
        label = f"dynamic batcher, {concurrency['clients']} clients"
        if info:
            label += f" (mean batch {info['mean_batch']:.1f})"
        ax.axhline(concurrency["throughput_ips"], color="tab:gray", linestyle="--", label=label)
    _batch_axis(ax, batches)
    ax.set_ylim(0, max([*values, (concurrency or {}).get("throughput_ips", 0)]) * 1.2)
    ax.set_ylabel("throughput (images / s)")
    ax.set_title("Throughput")
    ax.legend(loc="best")


def _plot_distribution(ax: Any, concurrency: dict[str, Any]) -> None:
    samples = concurrency.get("latencies_ms") or []
    lat = concurrency.get("latency") or {}
    if samples:
        ax.hist(samples, bins=min(50, max(10, len(samples) // 5)), color="tab:blue", alpha=0.7)
    for key, style in (("p50_ms", "-"), ("p99_ms", "--")):
        if key in lat:
            ax.axvline(lat[key], color="tab:red", linestyle=style, label=f"{key[:3]} {lat[key]:.1f} ms")
    ax.set_xlabel("end-to-end latency per request (ms)")
    ax.set_ylabel("requests")
    ax.set_title(
        f"{concurrency.get('clients', '?')} concurrent clients, "
        f"{concurrency.get('throughput_ips', 0):.1f} images/s"
    )
    ax.legend(loc="upper right")


def _plot_title(report: dict[str, Any]) -> str:
    target = report.get("target", {})
    backend = report.get("backend") or {}
    settings = report.get("settings", {})
    host = report.get("host", {})
    device = host.get("gpu") or f"CPU, {host.get('cpu_count')} cores"
    name = target.get("model") or Path(str(target.get("path", target.get("url", "?")))).name
    title = f"{name} · {backend.get('backend', 'service')} {backend.get('precision', '')} · {device}"
    if settings.get("threads"):
        title += f" · {settings['threads']} threads"
    if report.get("results"):
        iters = min(r["iters"] for r in report["results"])
        title += (
            f"\nwall-clock per call, >= {iters} timed calls per point after {settings.get('warmup')} warm-up"
        )
    return title


def plot_compare(report: dict[str, Any], path: str | Path) -> None:
    """Throughput per backend x precision (bars, labelled with the speed-up over eager FP32 and the
    cosine to it) and achieved GFLOP/s against the measured BF16 and FP32 matmul peaks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    compare = report["compare"]
    rows = compare["rows"]
    batches = sorted({r["batch"] for r in rows})
    fig = Figure(figsize=(13, 1.6 + 0.42 * len(rows)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    labels = [f"{r['label']} · b{r['batch']}" if len(batches) > 1 else r["label"] for r in rows]
    ys = list(range(len(rows)))[::-1]
    colors = [_color(r) for r in rows]
    left.barh(ys, [r["throughput_ips"] for r in rows], color=colors)
    top = max(r["throughput_ips"] for r in rows)
    for y, r in zip(ys, rows):
        text = f"{r['throughput_ips']:.1f} img/s  {r['speedup_vs_eager']:.2f}x  cos {r['cosine']:.5f}"
        left.text(r["throughput_ips"] + top * 0.01, y, text, va="center", fontsize=8)
    left.set_yticks(ys, labels, fontsize=9)
    left.set_xlim(0, top * 1.6)
    left.set_xlabel("throughput (images / s), p50 latency per call")
    left.set_title("Throughput (speed-up vs eager FP32, cosine to it)")
    left.grid(True, axis="x", alpha=0.3)
    peaks = compare["peaks_gflops"]
    right.barh(ys, [r["gflops"] for r in rows], color=colors)
    for key, style in (("bf16", "--"), ("fp32", ":")):
        right.axvline(peaks[key], color="black", linestyle=style, label=f"{key} matmul peak {peaks[key]:.0f}")
    right.set_yticks(ys, [""] * len(rows))
    right.set_xlabel("achieved GFLOP/s (2 x MACs per image x img/s)")
    right.set_title("Achieved vs measured matmul peak")
    right.legend(loc="lower right", fontsize=8)
    right.grid(True, axis="x", alpha=0.3)
    fig.suptitle(_compare_title(report), fontsize=11)
    fig.savefig(path, format="png")


def _color(row: dict[str, Any]) -> str:
    """One colour per backend, in the backend table's order."""
    from msmlp.runtime.registry import backend_names

    names = backend_names()[1:]
    backend = row.get("backend") or row["label"].split()[0]
    return PALETTE[names.index(backend) % len(PALETTE)] if backend in names else PALETTE[-1]


def _compare_title(report: dict[str, Any]) -> str:
    compare = report["compare"]
    host = report.get("host", {})
    device = host.get("gpu") or f"CPU, {host.get('cpu_count')} cores"
    return (
        f"{compare['model']} · {compare['gflop_per_image']:.2f} GFLOP/image · {device} · "
        f"{compare['rounds']} interleaved rounds, real photos + augmented views"
    )
