"""Automatic mixed precision for INT8: which layer groups stay in high precision so that the held-out
cosine meets a target, or (:class:`Goal` with labels) the top-1 drop against FP32 is within a budget of
points, at the best measured speed.

Greedy, deterministic and bounded: the groups are ranked once by cosine gained per GMAC when kept
alone (:mod:`msmlp.diagnose.sensitivity`: one accuracy run per group, no timing); then the top 1, 2,
3... groups are kept until the target is met, and groups that turn out unnecessary are dropped again.
At most ``max_configs`` such configurations are tried, each timed at ``batch`` on ONNX Runtime CPU.
Choices depend on accuracy only, never on timings, so the same inputs give the same choice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from msmlp.diagnose.graph import load_model, quantized_groups, release
from msmlp.diagnose.sensitivity import Evaluator, GroupSensitivity, sensitivity, sensitivity_table
from msmlp.errors import InputError
from msmlp.log import logger
from msmlp.verify import ParityStats, compare

MAX_CONFIGS = 8
TIMING_RUNS = 3


@dataclass(frozen=True)
class Goal:
    """What a configuration must reach: the worst held-out cosine against the FP32 graph, or, with
    ``labels`` (one class index per held-out input), a top-1 drop of at most ``max_drop_points``
    percentage points below the FP32 graph's top-1 on those labels."""

    cosine: float | None = None
    max_drop_points: float | None = None
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.cosine is None) == (self.max_drop_points is None):
            raise InputError("the mixed-precision search takes one target: a cosine or an accuracy budget")
        if self.cosine is not None and not 0 < self.cosine < 1:
            raise InputError(f"--target-cosine {self.cosine!r} must be between 0 and 1 (e.g. 0.9995)")
        if self.max_drop_points is not None and (self.labels is None or not 0 <= self.max_drop_points <= 100):
            raise InputError(
                f"--max-accuracy-drop {self.max_drop_points!r} needs labels and a budget in 0..100 points"
            )

    @property
    def text(self) -> str:
        if self.cosine is not None:
            return f"held-out cosine >= {self.cosine}"
        return f"top-1 drop <= {self.max_drop_points} points on labelled held-out images"

    def drop(self, reference: np.ndarray, logits: np.ndarray) -> float | None:
        """Top-1 points lost against the reference logits on the labels (None without labels)."""
        if self.labels is None:
            return None
        ref = (reference.argmax(1) == self.labels).mean()
        return round(100 * float(ref - (logits.argmax(1) == self.labels).mean()), 6)

    def meets(self, stats: ParityStats, drop: float | None) -> bool:
        if self.cosine is not None:
            return stats.cosine >= self.cosine
        return drop is not None and drop <= self.max_drop_points  # type: ignore[operator]


@dataclass
class Config:
    name: str
    groups: list[str]
    cosine: float
    cosine_mean: float
    top1: float
    max_rel: float
    latency_ms: float
    meets: bool
    chosen: bool = False
    drop_points: float | None = None  # top-1 points lost against FP32 on the labels (accuracy goal)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SearchResult:
    target: float | None  # the cosine goal; None when the goal is an accuracy budget
    samples: int
    batch: int
    met: bool
    keep_groups: list[str]
    keep_nodes: list[str]
    configs: list[Config]
    sensitivity: list[GroupSensitivity]
    base_cosine: float
    speedup_vs_fp32: float | None = None  # chosen config vs the FP32 graph, interleaved timing
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    max_drop_points: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record kept in model.json (node names are listed there once, in ``keep_nodes``)."""
        return {
            "target_cosine": self.target,
            "max_accuracy_drop_points": self.max_drop_points,
            "target_met": self.met,
            "held_out_samples": self.samples,
            "batch": self.batch,
            "keep_groups": self.keep_groups,
            "keep_nodes": self.keep_nodes,
            "speedup_vs_fp32": self.speedup_vs_fp32,
            "configs": [c.to_dict() for c in self.configs],
            "sensitivity": [r.to_dict() for r in self.sensitivity],
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
            "method": "greedy by held-out cosine gained per GMAC; ONNX Runtime CPU timings; "
            "cosine = worst held-out sample vs the FP32 graph; "
            + (
                "met = cosine target"
                if self.target is not None
                else "met = labelled top-1 drop within budget"
            ),
        }

    def table(self) -> str:
        goal = (
            f"held-out cosine >= {self.target}"
            if self.target is not None
            else f"labelled top-1 drop <= {self.max_drop_points} points"
        )
        lines = [
            f"INT8 mixed precision: target {goal} over {self.samples} samples; "
            f"latency at batch {self.batch} on ONNX Runtime CPU",
            f"{'config':<14} {'kept groups':>11} {'cosine':>10} {'mean cos':>10} {'top-1':>6} {'max rel':>9} "
            f"{'ms':>8} {'vs fp32':>8} {'drop pt':>8}  ",
        ]
        fp32 = next((c.latency_ms for c in self.configs if c.name == "fp32"), None)
        for c in self.configs:
            ratio = f"{fp32 / c.latency_ms:.2f}x" if fp32 and c.latency_ms else "-"
            mark = "<- chosen" if c.chosen else ("meets" if c.meets else "")
            drop = "-" if c.drop_points is None else f"{c.drop_points:.2f}"
            lines.append(
                f"{c.name:<14} {len(c.groups):>11} {c.cosine:>10.6f} {c.cosine_mean:>10.6f} {c.top1:>6.0%} "
                f"{c.max_rel:>9.2e} {c.latency_ms:>8.1f} {ratio:>8} {drop:>8}  {mark}"
            )
        state = "met" if self.met else "NOT met (best trade-off found is chosen)"
        lines.append(f"target {state}; kept in high precision: {', '.join(self.keep_groups) or 'nothing'}")
        if self.speedup_vs_fp32:
            lines.append(
                f"chosen vs FP32 graph, interleaved timing: {self.speedup_vs_fp32:.2f}x faster (the fair "
                "ratio; per-config ms above are sequential medians of 3 runs, indicative on a loaded machine)"
            )
        lines += self.notes
        return "\n".join(lines)


def search_mixed_precision(
    fp32_path: str | Path,
    int8: str | Path | onnx.ModelProto,
    inputs: np.ndarray,
    target_cosine: float | None,
    *,
    batch: int = 8,
    max_configs: int = MAX_CONFIGS,
    threads: int | None = None,
    goal: Goal | None = None,
) -> SearchResult:
    """Choose the groups of the calibrated ``int8`` graph to keep in high precision (see module doc).

    ``inputs``: held-out preprocessed images (never the calibration batch). The FP32 graph's logits
    on them are the reference. ``goal`` replaces ``target_cosine`` (e.g. an accuracy budget on labels).
    """
    goal = goal or Goal(cosine=target_cosine)
    if goal.labels is not None and len(goal.labels) != len(inputs):
        raise InputError(f"{len(goal.labels)} labels for {len(inputs)} held-out inputs; one label per input")
    if isinstance(max_configs, bool) or not isinstance(max_configs, int) or max_configs < 1:
        raise InputError(f"max configurations {max_configs!r} must be a positive integer")
    start = time.perf_counter()
    fp32 = load_model(fp32_path)
    q = int8 if isinstance(int8, onnx.ModelProto) else load_model(int8)
    ev = Evaluator(fp32, inputs, batch, threads)
    configs = [_measure(ev, "fp32", [], fp32, goal), _measure(ev, "int8", [], q, goal)]
    base = ev.parity(q)
    groups = quantized_groups(q)
    rows: list[GroupSensitivity] = []
    kept: list[str] = []
    if not configs[1].meets:
        rows = sensitivity(fp32, q, ev, base)
        logger.info("%s", sensitivity_table(rows, base.cosine))
        kept = _greedy(ev, fp32, q, groups, rows, goal, max_configs, configs)
    chosen = _choose(configs, kept, goal)
    chosen.chosen = True
    result = SearchResult(
        target=goal.cosine,
        samples=len(inputs),
        batch=batch,
        met=chosen.meets,
        keep_groups=chosen.groups,
        keep_nodes=[n for g in chosen.groups for n in groups[g]],
        configs=configs,
        sensitivity=rows,
        base_cosine=base.cosine,
        max_drop_points=goal.max_drop_points,
    )
    final = release(q, fp32, result.keep_nodes) if chosen.groups else q
    result.speedup_vs_fp32 = _interleaved_speedup(ev, fp32, final)
    if not chosen.meets:
        result.notes.append(
            f"no configuration within {max_configs} tries met {goal.text}; the most accurate one "
            "tried is chosen (raise --max-configs, or --keep-fp32 more, or use FP16/BF16)"
        )
    result.seconds = time.perf_counter() - start
    return result


def _greedy(
    ev: Evaluator,
    fp32: onnx.ModelProto,
    q: onnx.ModelProto,
    groups: dict[str, list[str]],
    rows: Sequence[GroupSensitivity],
    target: Goal,
    max_configs: int,
    configs: list[Config],
) -> list[str]:
    """Keep the best-ranked groups one more at a time until the target is met, then drop the ones that
    are not needed (latest first). Returns the groups of the configuration that met the target."""
    order = [r.group for r in rows if r.gain > 0]
    tried = 0
    kept: list[str] = []
    met: list[str] | None = None
    for group in order:
        if tried >= max_configs:
            break
        kept = [*kept, group]
        tried += 1
        c = _measure(ev, f"keep {len(kept)}", kept, release(q, fp32, _nodes(groups, kept)), target)
        configs.append(c)
        if c.meets:
            met = kept
            break
    if met is None:
        return []
    for group in reversed(met[:-1]):  # the last one was needed to meet the target
        if tried >= max_configs:
            break
        trial = [g for g in met if g != group]
        tried += 1
        c = _measure(ev, f"drop {len(configs) - 1}", trial, release(q, fp32, _nodes(groups, trial)), target)
        configs.append(c)
        if c.meets:
            met = trial
    return met


def _choose(configs: list[Config], kept: list[str], goal: Goal) -> Config:
    """The INT8 configuration that met the target with the fewest groups kept; else the most accurate
    (by the goal's own measure: the drop on the labels, or the cosine)."""
    int8 = [c for c in configs if c.name != "fp32"]
    meeting = [c for c in int8 if c.meets]
    if meeting:
        exact = [c for c in meeting if c.groups == kept] if kept else []
        return exact[0] if exact else min(meeting, key=lambda c: (len(c.groups), -c.cosine))
    if goal.labels is not None:
        return min(int8, key=lambda c: (c.drop_points, -c.cosine, len(c.groups)))
    return max(int8, key=lambda c: (c.cosine, -len(c.groups)))


def _nodes(groups: dict[str, list[str]], kept: Sequence[str]) -> list[str]:
    return [n for g in kept for n in groups[g]]


def _measure(ev: Evaluator, name: str, kept: list[str], model: onnx.ModelProto, goal: Goal) -> Config:
    session = ev.session(model)
    logits = ev.logits(session)
    stats: ParityStats = compare(ev.reference, logits)
    drop = goal.drop(ev.reference, logits)
    ms = _latency(session, ev.inputs[: ev.batch])
    logger.info(
        "mixed precision %-10s %2d groups kept: cosine %.6f%s, %.1f ms",
        name,
        len(kept),
        stats.cosine,
        "" if drop is None else f", top-1 drop {drop:.2f} points",
        ms,
    )
    return Config(
        name,
        list(kept),
        stats.cosine,
        stats.cosine_mean,
        stats.top1,
        stats.max_rel,
        ms,
        goal.meets(stats, drop),
        drop_points=drop,
    )


def _latency(session: Any, x: np.ndarray, runs: int = TIMING_RUNS) -> float:
    """Median ms per call after one warm-up call."""
    name = session.get_inputs()[0].name
    session.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _interleaved_speedup(
    ev: Evaluator, fp32: onnx.ModelProto, chosen: onnx.ModelProto, rounds: int = 5
) -> float:
    """FP32 median / chosen median, the two alternating in one run (a loaded machine hits both alike)."""
    a, b = ev.session(fp32), ev.session(chosen)
    x = ev.inputs[: ev.batch]
    name = a.get_inputs()[0].name
    a.run(None, {name: x})
    b.run(None, {name: x})
    ta, tb = [], []
    for _ in range(rounds):
        for session, times in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            session.run(None, {name: x})
            times.append(time.perf_counter() - t0)
    return float(np.median(ta) / np.median(tb))


def quantize_mixed(
    fp32_path: str | Path,
    dst: str | Path,
    calib: np.ndarray,
    held_out: np.ndarray,
    target_cosine: float | None,
    *,
    goal: Goal | None = None,
    method: str = "max",
    keep_fp32: Sequence[str] = (),
    batch: int = 8,
    max_configs: int = MAX_CONFIGS,
    plot: str | Path | None = None,
    target: str = "tensorrt",
) -> dict[str, Any]:
    """INT8 with automatic mixed precision: calibrate once (``calib``, the export's cached batch), search
    on ``held_out`` inputs, then let ModelOpt write the graph with the chosen groups excluded. Returns
    :func:`~msmlp.exporters.quantize.quantize_int8`'s info plus a ``mixed_precision`` record (the search,
    and the written graph's own held-out figures). ``goal`` replaces ``target_cosine`` (an accuracy
    budget on labelled ``held_out`` inputs)."""
    from msmlp.exporters.quantize import quantize_int8

    dst = Path(dst)
    goal = goal or Goal(cosine=target_cosine)
    info = quantize_int8(Path(fp32_path), dst, calib, method=method, keep_fp32=keep_fp32, target=target)
    result = search_mixed_precision(
        fp32_path, dst, held_out, goal.cosine, batch=batch, max_configs=max_configs, goal=goal
    )
    logger.info("%s", result.table())
    record = result.to_dict()
    if result.keep_nodes:
        info = quantize_int8(
            Path(fp32_path),
            dst,
            calib,
            method=method,
            keep_fp32=[*keep_fp32, *result.keep_nodes],
            target=target,
        )
        ev = Evaluator(load_model(fp32_path), held_out, batch, None)
        logits = ev.logits(ev.session(load_model(dst)))
        final, drop = compare(ev.reference, logits), goal.drop(ev.reference, logits)
        record["written"] = {
            "cosine": final.cosine,
            "cosine_mean": final.cosine_mean,
            "top1": final.top1,
            "drop_points": drop,
        }
        if result.met and not goal.meets(final, drop):
            logger.warning(
                "mixed precision: ModelOpt's graph with the chosen groups excluded misses %s on the held-out "
                "inputs (cosine %.6f, top-1 drop %s points), which the search's configuration met",
                goal.text,
                final.cosine,
                drop,
            )
    if plot is not None:
        from msmlp.diagnose.plot import plot_tradeoff

        plot_tradeoff(record["configs"], goal.cosine, plot)
        record["plot"] = Path(plot).name
    return {**info, "mixed_precision": record}
