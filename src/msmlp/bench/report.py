"""The report: what machine, the terminal tables (per batch size, per layer, under load, backend
comparison), and ``bench.json`` + ``bench.png`` written atomically."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.fileio import atomic_path
from msmlp.hostcpu import host_cpu


def host_info() -> dict[str, Any]:
    """The machine and each backend's library version behind the figures."""
    from msmlp.runtime.registry import backend_specs

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": host_cpu().record(),  # model, BF16/AMX/VNNI flags, MSMLP_CPU_MASK where set
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for spec in backend_specs():
        info[spec.probe.module] = spec.probe.version()
    info["gpu"] = None
    if info["torch"]:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """The terminal table from the report's rows: one per batch size (wall clock), then CUDA-event rows."""
    head = f"{'batch':>5} {'iters':>6} {'p50 ms':>9} {'p90 ms':>9} {'p95 ms':>9} {'p99 ms':>9} "
    head += f"{'mean ms':>9} {'std ms':>8} {'img/s':>9}"
    lines = [head, "-" * len(head)]
    for r in [*results, *(r["gpu"] for r in results if r.get("gpu"))]:
        lines.append(
            f"{r['batch']:>5} {r['iters']:>6} {r['p50_ms']:>9.2f} {r['p90_ms']:>9.2f} {r['p95_ms']:>9.2f} "
            f"{r['p99_ms']:>9.2f} {r['mean_ms']:>9.2f} {r['std_ms']:>8.2f} {r['throughput_ips']:>9.1f}"
            + ("  (CUDA events)" if r["timing"] != "wall" else "")
        )
    fewest = min((r["iters"] for r in results), default=100)
    if fewest < 100:
        lines.append(
            f"note: p99 of {fewest} samples is close to the maximum; "
            "use --iters 200 or --duration-s for a stable tail"
        )
    return "\n".join(lines)


def format_concurrency(c: dict[str, Any]) -> str:
    """One paragraph for a concurrency run (the report's ``concurrency`` entry)."""
    text = f"{c['clients']} clients -> {c['target']}: {c['answered']}/{c['requests']} answered in "
    text += f"{c['wall_s']:.2f} s, {c['throughput_ips']:.1f} img/s"
    lat = c.get("latency")
    if lat:
        text += f"; latency p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f}, p99 {lat['p99_ms']:.1f}"
        text += f", max {lat['max_ms']:.1f}"
    if c.get("batcher"):
        text += f"; mean batch {c['batcher']['mean_batch']:.2f} (max {c['batcher']['max_batch']})"
    if c.get("errors"):
        text += f"; errors {c['errors']}"
    return text


def format_profile(profile: dict[str, Any]) -> str:
    if not profile.get("available"):
        return f"per-layer profile: not available ({profile.get('reason')})"
    lines = [
        f"per-layer profile ({profile['source']}, batch {profile['batch']}, {profile['runs']} runs, "
        f"{profile['total_ms_per_run']:.2f} ms of kernel time per run):"
    ]
    lines += [f"  {r['op']:<32} {r['ms_per_run']:>9.3f} ms {r['percent']:>6.1f}%" for r in profile["top_ops"]]
    if profile.get("ms_by_precision"):
        lines.append(
            "  by kernel precision: "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in profile["ms_by_precision"].items())
        )
    if profile.get("top_nodes"):
        lines.append("  slowest nodes:")
        lines += [
            f"  {r['node'][:48]:<48} {r['op']:<20} {r['ms_per_run']:>8.3f} ms"
            + (f"  {r['exec_type']}" if r.get("exec_type") else "")
            for r in profile["top_nodes"][:8]
        ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path | None]:
    """``bench.json`` and ``bench.png`` in ``out_dir`` (each written to a temp file, then renamed).

    The plot needs matplotlib (the [plot] extra); without it only bench.json is written (png is None)."""
    import importlib.util

    from msmlp.bench.plot import plot_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "bench.json", out / "bench.png"
    writers = [(json_path, lambda p: p.write_text(json.dumps(report, indent=2) + "\n"))]
    if importlib.util.find_spec("matplotlib") is not None:
        writers.append((png_path, lambda p: plot_report(report, p)))
    for path, write in writers:
        with atomic_path(path) as tmp:
            write(tmp)
    return json_path, png_path if len(writers) == 2 else None


def format_compare(compare: dict[str, Any]) -> str:
    """The backend comparison: one row per backend x precision, speed and agreement with eager FP32."""
    peaks = compare["peaks_gflops"]
    head = f"{'backend':<30} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'img/s':>8} {'vs eager':>8} "
    head += f"{'GFLOP/s':>8} {'%bf16pk':>7} {'cosine':>10} {'top-1':>6}"
    accuracy = compare.get("accuracy")
    if accuracy:
        head += f" {'acc@1 %':>8} {'acc@5 %':>8} {'d@1 pt':>7}"
    lines = [head, "-" * len(head)]
    for r in compare["rows"]:
        line = (
            f"{r['label']:<30} {r['batch']:>5} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} {r['throughput_ips']:>8.1f} "
            f"{r['speedup_vs_eager']:>7.2f}x {r['gflops']:>8.1f} {r['percent_of_bf16_peak']:>6.1f}% "
            f"{r['cosine']:>10.6f} {r['top1']:>6.0%}"
        )
        if accuracy:
            line += (
                f" {100 * r['accuracy_top1']:>8.2f} {100 * r['accuracy_top5']:>8.2f} "
                f"{r['accuracy_top1_delta_points']:>+7.2f}"
            )
        lines.append(line)
    lines.append(
        f"matmul peak measured in this run (torch, n={compare['peak_n']}): bf16 {peaks['bf16']:.0f} GFLOP/s, "
        f"fp32 {peaks['fp32']:.0f} GFLOP/s; model {compare['gflop_per_image']:.2f} GFLOP per image "
        "(2 x GMACs); cosine/top-1 against eager FP32 on the same real-image batch"
    )
    if accuracy:
        lines.append(
            f"acc@1/acc@5: top-1/top-5 on {accuracy['images_scored']} labelled images ({accuracy['layout']}, "
            f"{accuracy['source']}), 95% intervals in bench.json; d@1: top-1 points against the first row"
        )
    for name, why in compare.get("skipped", {}).items():
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)
