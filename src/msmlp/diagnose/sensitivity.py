"""INT8 sensitivity per layer group: what the held-out logits gain when only that group stays in high
precision, next to what that costs in time (ONNX Runtime's profiler on the FP32 and INT8 graphs).

A group is what the model's family declares (:class:`msmlp.models.family.BlockSpec`): for both
families a block's token mixing (``.../mix``: the shift/roll, its projections and split attention) and
its MLP (``.../mlp``); outside the blocks, a module (patch embedding, downsampling, head).
Leaving a group unquantized is done by :func:`msmlp.diagnose.graph.release` on the calibrated graph,
so no group costs a new calibration.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from msmlp.diagnose.graph import quantized_groups, release
from msmlp.exporters.onnx_io import read_layout
from msmlp.log import logger
from msmlp.verify import ParityStats, compare

PROFILE_RUNS = 3


@dataclass
class GroupSensitivity:
    group: str
    nodes: int
    cosine: float  # held-out worst-sample cosine with only this group in high precision
    gain: float  # cosine minus the all-INT8 cosine
    gmacs: float  # multiply-accumulates per image in the group's matrix/conv ops (from shapes)
    ms_fp32: float  # the group's kernel time in the FP32 graph (profiler, per batch)
    ms_int8: float  # ... and in the INT8 graph
    share_int8: float  # the group's share of the INT8 graph's kernel time

    @property
    def cost_ms(self) -> float:
        """Time that keeping the group in high precision is expected to cost, per batch."""
        return self.ms_fp32 - self.ms_int8

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost_ms": self.cost_ms}


class Evaluator:
    """Runs graphs on ONNX Runtime CPU against fixed reference logits (the FP32 graph's)."""

    def __init__(self, fp32: onnx.ModelProto, inputs: np.ndarray, batch: int, threads: int | None) -> None:
        self.inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        self.batch = batch
        self.threads = threads
        self.reference = self.logits(self.session(fp32))

    def session(self, model: onnx.ModelProto, *, profile: str | None = None) -> Any:
        import onnxruntime as ort

        from msmlp.runtime.ort import session_from_onnx

        with tempfile.TemporaryDirectory(prefix="msmlp-sens-") as tmp:
            path = Path(tmp) / "graph.onnx"
            onnx.save_model(model, str(path))
            if profile is None:
                return session_from_onnx(path, threads=self.threads)
            options = ort.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = profile
            if self.threads:
                options.intra_op_num_threads = self.threads
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def logits(self, session: Any) -> np.ndarray:
        name = session.get_inputs()[0].name
        outs = [
            session.run(None, {name: self.inputs[i : i + self.batch]})[0]
            for i in range(0, len(self.inputs), self.batch)
        ]
        return np.concatenate(outs).astype(np.float32)

    def parity(self, model: onnx.ModelProto) -> ParityStats:
        return compare(self.reference, self.logits(self.session(model)))

    def group_times(self, model: onnx.ModelProto) -> dict[str, float]:
        """Kernel ms per batch by layer group, from ONNX Runtime's profiler (one warm-up run left out).
        Nodes ORT fused under a new name without a module path count as ``graph``."""
        layout = read_layout(model)
        with tempfile.TemporaryDirectory(prefix="msmlp-prof-") as tmp:
            session = self.session(model, profile=str(Path(tmp) / "ort"))
            x = self.inputs[: self.batch]
            name = session.get_inputs()[0].name
            for _ in range(PROFILE_RUNS + 1):
                session.run(None, {name: x})
            with open(session.end_profiling(), encoding="utf-8") as f:
                events = json.load(f)
        events = events if isinstance(events, list) else events.get("traceEvents", [])
        runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
        warm_end = runs[0]["ts"] + runs[0]["dur"] if runs else -math.inf
        found: dict[str, float] = {}
        for e in events:
            label = str(e.get("name", ""))
            if e.get("cat") == "Node" and label.endswith("_kernel_time") and e["ts"] >= warm_end:
                group = layout.group(label[: -len("_kernel_time")])
                found[group] = found.get(group, 0.0) + float(e.get("dur", 0)) / 1e3 / PROFILE_RUNS
        return found


def group_gmacs(model: onnx.ModelProto, groups: Mapping[str, list[str]]) -> dict[str, float]:
    """Multiply-accumulates per image of each group's MatMul/Gemm/Conv nodes (batch axis counted as 1)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError):
        return dict.fromkeys(groups, 0.0)
    g = inferred.graph
    shapes = {
        v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        for v in [*g.value_info, *g.input, *g.output]
    }
    shapes.update({t.name: list(t.dims) for t in g.initializer})
    macs: dict[str, float] = {}
    for n in g.node:
        out, inp = shapes.get(n.output[0]), shapes.get(n.input[0]) if n.input else None
        if not out or not inp:
            continue
        if n.op_type in ("MatMul", "Gemm"):
            count = float(np.prod(out)) * inp[-1]
        elif n.op_type == "Conv":
            w = shapes.get(n.input[1], [])
            count = float(np.prod(out)) * float(np.prod(w[1:])) if w else 0.0
        else:
            continue
        macs[n.name] = count
    return {grp: sum(macs.get(n, 0.0) for n in nodes) / 1e9 for grp, nodes in groups.items()}


def sensitivity(
    fp32: onnx.ModelProto, int8: onnx.ModelProto, evaluator: Evaluator, base: ParityStats
) -> list[GroupSensitivity]:
    """One row per quantized group, ranked by cosine gained per GMAC kept in high precision (the order
    the greedy search tries them in; MACs rather than measured time, so the order is deterministic)."""
    groups = quantized_groups(int8)
    gmacs = group_gmacs(fp32, groups)
    t32, t8 = evaluator.group_times(fp32), evaluator.group_times(int8)
    total8 = sum(t8.values()) or 1.0
    rows = []
    for group, nodes in groups.items():
        stats = evaluator.parity(release(int8, fp32, nodes))
        rows.append(
            GroupSensitivity(
                group,
                len(nodes),
                stats.cosine,
                stats.cosine - base.cosine,
                gmacs.get(group, 0.0),
                t32.get(group, 0.0),
                t8.get(group, 0.0),
                t8.get(group, 0.0) / total8,
            )
        )
        logger.debug("sensitivity %s: cosine %.6f", group, stats.cosine)
    return sorted(rows, key=lambda r: (-_merit(r), r.group))


def _merit(row: GroupSensitivity) -> float:
    return row.gain / max(row.gmacs, 1e-3)


def sensitivity_table(rows: list[GroupSensitivity], base_cosine: float) -> str:
    lines = [
        f"INT8 sensitivity per layer group (held-out worst-sample cosine; all-INT8: {base_cosine:.6f})",
        f"{'rank':>4} {'group':<30} {'cosine alone':>12} {'gained':>10} {'GMAC/img':>9} {'int8 ms':>8} "
        f"{'fp32 ms':>8} {'costs ms':>8} {'share':>6}",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(
            f"{i:>4} {r.group:<30} {r.cosine:>12.6f} {r.gain:>+10.2e} {r.gmacs:>9.3f} {r.ms_int8:>8.1f} "
            f"{r.ms_fp32:>8.1f} {r.cost_ms:>+8.1f} {r.share_int8:>6.1%}"
        )
    lines.append(
        "cosine alone: only that group in high precision; costs ms: its profiled FP32 minus INT8 kernel time "
        "per batch (ONNX Runtime CPU); ranked by cosine gained per GMAC"
    )
    return "\n".join(lines)
