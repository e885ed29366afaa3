"""Layer-by-layer comparison of a candidate graph (FP16, INT8, another backend) with the FP32 reference.

Both graphs get every watched tensor (:func:`msmlp.diagnose.graph.select_taps`) as an extra output and
run on the same real images; the candidate's tensors are found by name through the converters' Q/DQ
and Cast chains. Per layer: cosine (worst and mean over samples), max and mean relative error (abs
error / range of that sample's reference tensor, as in :mod:`msmlp.verify`), the error it adds over
the layers feeding it, the first layer that crosses the threshold, and how error grows with depth.

Memory stays bounded: inputs run in chunks small enough that one chunk's watched tensors fit in
``memory_mb`` (both graphs together), and each tensor is reduced to per-sample statistics at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from msmlp.diagnose.graph import Tap, load_model, match_taps, producers, select_taps, with_outputs
from msmlp.diagnose.runners import Run, Target, describe, open_runner, reference_runner
from msmlp.errors import InputError
from msmlp.log import logger

THRESHOLD = 0.999  # cosine below which a layer counts as "crossed"
MEMORY_MB = 1024


@dataclass
class LayerStats:
    """Statistics of one watched tensor over all samples (scalars only: nothing per element is kept)."""

    depth: int
    name: str
    candidate_name: str
    op: str
    group: str
    samples: int = 0
    cosine: float = 1.0  # worst sample
    cosine_mean: float = 0.0
    max_rel: float = 0.0
    mean_rel: float = 0.0
    added: float = 0.0  # (1 - cosine_mean) here minus the largest among the watched tensors feeding it

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = ref.reshape(len(ref), -1).astype(np.float32, copy=False)
        c = cand.reshape(len(cand), -1).astype(np.float32, copy=False)
        finite = np.isfinite(c).all(axis=1)
        c = np.where(np.isfinite(c), c, 0.0)
        dot = np.einsum("ij,ij->i", r, c, dtype=np.float64)
        norms = np.sqrt(
            np.einsum("ij,ij->i", r, r, dtype=np.float64) * np.einsum("ij,ij->i", c, c, dtype=np.float64)
        )
        cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 1.0)
        cos = np.where(finite, cos, -1.0)
        span = (r.max(axis=1) - r.min(axis=1)).astype(np.float64)
        err = np.abs(c - r)
        rel_max = err.max(axis=1) / np.where(span > 0, span, 1.0)
        rel_mean = err.mean(axis=1, dtype=np.float64) / np.where(span > 0, span, 1.0)
        rel_max = np.where(finite, rel_max, np.inf)
        n = self.samples
        self.samples += len(r)
        self.cosine = float(min(self.cosine, cos.min()))
        self.cosine_mean = float((self.cosine_mean * n + cos.sum()) / self.samples)
        self.max_rel = float(max(self.max_rel, rel_max.max()))
        self.mean_rel = float((self.mean_rel * n + rel_mean.sum()) / self.samples)

    @property
    def error(self) -> float:
        """1 - mean cosine: the figure plotted against depth and used for "added" error."""
        return max(1.0 - self.cosine_mean, 0.0)


@dataclass
class LayerReport:
    reference: dict[str, Any]
    candidate: dict[str, Any]
    samples: int
    batch: int
    threshold: float
    layers: list[LayerStats]
    unmatched: list[str] = field(default_factory=list)
    seconds: float = 0.0
    chunk: int = 0

    @property
    def first_crossing(self) -> LayerStats | None:
        return next((s for s in self.layers if s.cosine < self.threshold), None)

    def entry_points(self, top: int = 5) -> list[LayerStats]:
        """Layers that add the most error over their inputs: where error enters."""
        return sorted(self.layers, key=lambda s: (-s.added, s.depth))[:top]

    def growth(self) -> dict[str, Any]:
        """How error grows with depth: the first and last layer's error and the fitted growth per layer
        (slope of log10(1 - cosine_mean) against depth, over layers with a measurable error)."""
        pts = [(s.depth, math.log10(s.error)) for s in self.layers if s.error > 1e-12]
        slope = float(np.polyfit(*zip(*pts), 1)[0]) if len(pts) >= 2 else 0.0
        first = next((s for s in self.layers if s.error > 1e-12), None)
        last = self.layers[-1] if self.layers else None
        return {
            "first_error": first.error if first else 0.0,
            "first_error_layer": first.name if first else None,
            "last_error": last.error if last else 0.0,
            "ratio_last_to_first": (last.error / first.error) if first and last and first.error else None,
            "log10_error_per_layer": slope,
            "x_per_10_layers": 10 ** (10 * slope),
        }

    def to_dict(self) -> dict[str, Any]:
        crossing = self.first_crossing
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "samples": self.samples,
            "batch": self.batch,
            "chunk": self.chunk,
            "threshold_cosine": self.threshold,
            "first_crossing": asdict(crossing) if crossing else None,
            "entry_points": [s.name for s in self.entry_points()],
            "growth": self.growth(),
            "seconds": round(self.seconds, 2),
            "unmatched": self.unmatched,
            "definitions": {
                "cosine": "worst over samples of the cosine between the flattened tensors",
                "rel": "abs error / range (max - min) of that sample's reference tensor",
                "added": "(1 - mean cosine) here minus the largest (1 - mean cosine) of the watched tensors feeding it",
            },
            "layers": [asdict(s) for s in self.layers],
        }

    def table(self, rows: int | None = None) -> str:
        crossing = self.first_crossing
        g = self.growth()
        head = [
            f"layers: {self.candidate.get('file')} on {self.candidate.get('backend')} vs "
            f"{Path(str(self.reference.get('file'))).name} (FP32, onnxruntime); {self.samples} samples, "
            f"{len(self.layers)} layers, {self.seconds:.1f} s",
            f"{'depth':>5} {'layer':<58} {'op':<18} {'cosine':>10} {'mean cos':>10} {'max rel':>9} "
            f"{'mean rel':>9} {'added':>9}",
        ]
        shown = self.layers if rows is None else _around(self.layers, crossing, rows)
        lines = [
            f"{s.depth:>5} {_short(s.name, 58):<58} {s.op:<18} {s.cosine:>10.6f} {s.cosine_mean:>10.6f} "
            f"{s.max_rel:>9.2e} {s.mean_rel:>9.2e} {s.added:>9.2e}" + (" <" if s is crossing else "")
            for s in shown
        ]
        tail = [
            f"first layer with cosine < {self.threshold}: "
            + (f"{crossing.name} (depth {crossing.depth}, {crossing.group})" if crossing else "none"),
            "error enters most at: " + ", ".join(f"{s.name} (+{s.added:.1e})" for s in self.entry_points(3)),
            f"growth: 1-cos {g['first_error']:.1e} at the first affected layer -> {g['last_error']:.1e} at the "
            f"output; x{g['x_per_10_layers']:.2f} per 10 layers (fit)",
        ]
        if self.unmatched:
            tail.append(
                f"{len(self.unmatched)} reference tensors not found in the candidate: {self.unmatched[:3]}"
            )
        return "\n".join(head + lines + tail)


def compare_layers(
    reference: str | Path,
    candidate: Target,
    inputs: np.ndarray,
    *,
    batch: int = 8,
    threshold: float = THRESHOLD,
    memory_mb: float = MEMORY_MB,
    threads: int | None = None,
) -> LayerReport:
    """Compare every watched tensor of ``candidate`` with the FP32 ``reference`` graph on ``inputs``
    (preprocessed N,C,H,W), ``batch`` inputs per run at most (fewer when the memory bound asks)."""
    if not 0 < threshold <= 1:
        raise InputError(f"threshold cosine {threshold!r} must be in (0, 1]")
    if batch < 1 or len(inputs) < 1:
        raise InputError(
            f"need a batch >= 1 and at least one input, got batch {batch} and {len(inputs)} inputs"
        )
    start = time.perf_counter()
    ref_model, cand_model = load_model(reference), load_model(candidate.path)
    taps = select_taps(ref_model)
    matched = match_taps(ref_model, taps, cand_model)
    unmatched = [t.name for t in taps if t.name not in matched]
    taps = [t for t in taps if t.name in matched]
    ref_run = reference_runner(
        Path(reference), with_outputs(ref_model, [t.name for t in taps]), [t.name for t in taps], threads
    )
    cand_outputs = sorted(set(matched.values()))
    cand_run = open_runner(candidate, with_outputs(cand_model, cand_outputs), cand_outputs, threads)
    chunk = _chunk(ref_run, inputs, batch, memory_mb)
    stats = {t.name: LayerStats(t.depth, t.name, matched[t.name], t.op, t.group) for t in taps}
    for lo in range(0, len(inputs), chunk):
        x = np.ascontiguousarray(inputs[lo : lo + chunk], dtype=np.float32)
        _accumulate(stats, ref_run(x), cand_run(x), matched)
    layers = [stats[t.name] for t in taps if stats[t.name].samples]
    _added(layers, taps, ref_model)
    report = LayerReport(
        reference={"file": str(reference), "backend": "onnxruntime", "precision": "fp32"},
        candidate=describe(candidate),
        samples=len(inputs),
        batch=batch,
        threshold=threshold,
        layers=layers,
        unmatched=unmatched,
        seconds=time.perf_counter() - start,
        chunk=chunk,
    )
    logger.info(
        "compare-layers: %d layers over %d samples in %.1f s", len(layers), len(inputs), report.seconds
    )
    return report


def _chunk(ref_run: Run, inputs: np.ndarray, batch: int, memory_mb: float) -> int:
    """Inputs per run: ``batch``, or fewer so that one run's watched tensors of both graphs fit the bound.
    Sized from one single-input run of the reference."""
    probe = ref_run(np.ascontiguousarray(inputs[:1], dtype=np.float32))
    per_sample = sum(v.nbytes for v in probe.values()) * 2  # reference + candidate
    del probe
    fit = max(1, int(memory_mb * 2**20 // max(per_sample, 1)))
    if fit < batch:
        logger.info(
            "compare-layers: %.0f MB of watched tensors per input; running %d inputs at a time (--memory-mb %g)",
            per_sample / 2**20,
            fit,
            memory_mb,
        )
    return min(batch, fit)


def _accumulate(
    stats: dict[str, LayerStats],
    ref: dict[str, np.ndarray],
    cand: dict[str, np.ndarray],
    matched: dict[str, str],
) -> None:
    """Reduce each tensor to statistics, releasing the reference arrays as it goes."""
    for name in list(ref):
        got = cand.get(matched.get(name, ""))
        value = ref.pop(name)
        if got is None or name not in stats:
            continue
        if got.shape != value.shape:
            logger.debug(
                "compare-layers: %s has shape %s in the candidate, %s in the reference",
                name,
                got.shape,
                value.shape,
            )
            continue
        stats[name].update(value, got)


def _added(layers: list[LayerStats], taps: Sequence[Tap], model: onnx.ModelProto) -> None:
    """Error each layer adds over the watched tensors feeding it (found by walking back through the
    graph until a watched tensor, a graph input or a constant)."""
    by_name = {s.name: s for s in layers}
    make = producers(model)
    for s in layers:
        feeding = _upstream(s.name, set(by_name), make)
        before = max((by_name[u].error for u in feeding), default=0.0)
        s.added = s.error - before


def _upstream(name: str, watched: set[str], make: dict[str, onnx.NodeProto]) -> set[str]:
    found: set[str] = set()
    stack = list(make[name].input) if name in make else []
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen or not t:
            continue
        seen.add(t)
        if t in watched:
            found.add(t)
        elif t in make:
            stack.extend(make[t].input)
    return found


def _around(layers: list[LayerStats], crossing: LayerStats | None, rows: int) -> list[LayerStats]:
    """At most ``rows`` layers for the terminal: the first, the crossing and its neighbours, the last."""
    if len(layers) <= rows:
        return layers
    keep = {0, len(layers) - 1}
    if crossing is not None:
        i = layers.index(crossing)
        keep |= set(range(max(0, i - 2), min(len(layers), i + 3)))
    step = max(1, len(layers) // max(1, rows - len(keep)))
    keep |= set(range(0, len(layers), step))
    return [layers[i] for i in sorted(keep)][: rows + 6]


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]
