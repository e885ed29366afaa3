"""Where the time goes, per layer, from each backend's own profiler: ONNX Runtime's trace, torch.profiler,
OpenVINO's performance counters (``PERF_COUNT``, with the kernel and precision each layer ran in), and
TensorRT's layer profiler when the backend offers one. All are ranked the same way: op types and nodes
by time per run, with their share of the total.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.bench.timing import make_batch, on_gpu
from msmlp.runtime.base import Backend


def profile_layers(
    backend: Backend, batch: int, *, onnx_path: str | Path | None = None, runs: int = 10, top: int = 15
) -> dict[str, Any]:
    """The per-layer profile of ``backend`` at ``batch``; ``{"available": False, "reason": ...}`` when the
    backend has no profiler."""
    x = make_batch(backend, batch)
    if backend.name == "onnxruntime":
        path = onnx_path or getattr(backend, "path", None)
        if path is not None:
            return profile_onnxruntime(path, x, backend, runs=runs, top=top)
    if backend.name == "pytorch":
        return profile_torch(backend, x, runs=runs, top=top)
    if backend.name == "openvino":
        return profile_openvino(backend, x, runs=runs, top=top)
    return {"available": False, "reason": f"the {backend.name} backend exposes no per-layer profiler"}


def profile_openvino(backend: Backend, x: np.ndarray, *, runs: int = 10, top: int = 15) -> dict[str, Any]:
    """OpenVINO's performance counters, op types labelled with the precision their kernels ran in
    (``FullyConnected bf16``, ``FullyConnected int8``...), so a Q/DQ placement's effect is visible."""
    raw = backend.profile_layers(x, runs)  # type: ignore[attr-defined]
    node_ms = {r["node"]: r["ms_per_run"] * runs for r in raw["nodes"]}
    op_of = {r["node"]: f"{r['op']} {r['precision']}" for r in raw["nodes"]}
    found = _ranked("openvino", raw["batch"], runs, node_ms, op_of, top)
    kernels = {r["node"]: r["exec_type"] for r in raw["nodes"]}
    for row in found["top_nodes"]:
        row["exec_type"] = kernels.get(row["node"], "?")
    by_precision: dict[str, float] = {}
    for r in raw["nodes"]:
        by_precision[r["precision"]] = by_precision.get(r["precision"], 0.0) + r["ms_per_run"]
    found["ms_by_precision"] = dict(sorted(by_precision.items(), key=lambda kv: -kv[1]))
    return found


def profile_onnxruntime(
    onnx_path: str | Path, x: np.ndarray, backend: Backend, *, runs: int = 10, top: int = 15
) -> dict[str, Any]:
    """A profiling session beside the backend's (same providers and threads): nodes and op types
    ranked by kernel time over ``runs`` runs, after one warm-up run that is left out."""
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="msmlp-ortprof-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        threads = getattr(backend, "threads", None)
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = list(backend.info.details.get("providers") or ["CPUExecutionProvider"])
        session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        feed = {session.get_inputs()[0].name: x}
        for _ in range(runs + 1):
            session.run(None, feed)
        events = _read_trace(session.end_profiling())
    model_runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    warm_end = model_runs[0]["ts"] + model_runs[0]["dur"] if model_runs else -math.inf
    node_ms: dict[str, float] = {}
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and e["ts"] >= warm_end:
            node = e["name"][: -len("_kernel_time")]
            node_ms[node] = node_ms.get(node, 0.0) + float(e.get("dur", 0)) / 1e3
            op_of[node] = str(e.get("args", {}).get("op_name", "?"))
    return _ranked("onnxruntime", len(x), max(len(model_runs) - 1, 1), node_ms, op_of, top)


def _read_trace(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    finally:
        Path(path).unlink(missing_ok=True)
    return data if isinstance(data, list) else data.get("traceEvents", [])


def profile_torch(backend: Backend, x: np.ndarray, *, runs: int = 10, top: int = 15) -> dict[str, Any]:
    """torch.profiler over ``runs`` calls, ranked by self time per op type."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu(backend) else [])
    backend(x)
    with profile(activities=activities) as prof:
        for _ in range(runs):
            backend(x)
    cuda = on_gpu(backend) and torch.cuda.is_available()
    op_ms = {
        e.key: (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e3
        for e in prof.key_averages()
        if (e.self_device_time_total if cuda else e.self_cpu_time_total) > 0
    }
    return _ranked("pytorch", len(x), runs, {}, {}, top, op_ms=op_ms)


def _ranked(
    source: str,
    batch: int,
    runs: int,
    node_ms: dict[str, float],
    op_of: dict[str, str],
    top: int,
    op_ms: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Top nodes and op types by total time over ``runs``, reported per run with their share."""
    if op_ms is None:
        op_ms = {}
        for node, ms in node_ms.items():
            op = op_of.get(node, node)
            op_ms[op] = op_ms.get(op, 0.0) + ms
    total = sum(op_ms.values()) or 1.0

    def rows(times: dict[str, float], key: str) -> list[dict[str, Any]]:
        ranked = sorted(times.items(), key=lambda kv: -kv[1])[:top]
        out = []
        for name, ms in ranked:
            row = {key: name, "ms_per_run": ms / runs, "percent": 100.0 * ms / total}
            if key == "node":
                row["op"] = op_of.get(name, "?")
            out.append(row)
        return out

    return {
        "available": True,
        "source": source,
        "batch": batch,
        "runs": runs,
        "total_ms_per_run": total / runs,
        "top_ops": rows(op_ms, "op"),
        "top_nodes": rows(node_ms, "node") if node_ms else [],
    }
