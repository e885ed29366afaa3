"""Per-layer profiles ranked one way for every backend: op types and nodes by time per run, with their
share of the total. Each backend's ``profile_layers`` feeds its own profiler's times through
:func:`ranked`, so ``msmlp bench --profile`` needs to know no backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def ranked(
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
        ordered = sorted(times.items(), key=lambda kv: -kv[1])[:top]
        out = []
        for name, ms in ordered:
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


def read_trace(path: str) -> list[dict[str, Any]]:
    """The events of a Chrome-trace JSON file (ONNX Runtime's profile), deleting the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    finally:
        Path(path).unlink(missing_ok=True)
    return data if isinstance(data, list) else data.get("traceEvents", [])
