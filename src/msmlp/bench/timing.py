"""Timing a backend: per-call wall-clock (and CUDA-event) samples, their percentiles, and the matmul peak
of this machine that achieved GFLOP/s are set against.

Every figure says how it was taken: the number of timed calls behind each percentile (p99 of 20 samples
is close to the maximum), ``time.perf_counter`` around each backend call (inputs already in host memory,
outputs copied back), plus CUDA-event timing when the backend runs on a GPU.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from msmlp.errors import InputError
from msmlp.runtime.base import Backend

MIN_DURATION_ITERS = 3
MAX_ITERS = 100_000


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one batch size (milliseconds per backend call) and the throughput it implies."""

    batch: int
    iters: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput_ips: float  # images per second: batch * iters / total time
    timing: str = "wall"  # "wall" (perf_counter) or "cuda_event"
    gpu: LatencyStats | None = None  # CUDA-event timing of the same calls, when on a GPU


def summarize(samples_s: Sequence[float], batch: int, timing: str = "wall") -> LatencyStats:
    """Percentiles (linear interpolation), mean, std and throughput of per-call times in seconds."""
    if not samples_s:
        raise InputError("no timed iterations to summarize")
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return LatencyStats(
        batch=batch,
        iters=len(ms),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        throughput_ips=float(batch * len(ms) / (ms.sum() / 1e3)),
        timing=timing,
    )


def interleaved_samples(
    calls: Mapping[str, Callable[[np.ndarray], Any]], x: np.ndarray, rounds: int
) -> dict[str, list[float]]:
    """Seconds per call of every entry on ``x``: ``rounds`` rounds, each calling every entry once in a
    rotated order (round r starts at entry r), so drift or a noisy neighbour on shared cores hits all
    entries alike. Warm-up is the caller's."""
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            calls[name](x)
            samples[name].append(time.perf_counter() - t0)
    return samples


def make_batch(
    backend: Backend, batch: int, seed: int = 0, size: tuple[int, int] | None = None
) -> np.ndarray:
    """A random float32 input of the backend's shape, H and W ``size`` where given (a graph with dynamic
    H/W); latency does not depend on the values here."""
    shape = (batch, *backend.input_shape[1:])
    if size is not None and len(shape) == 4:
        shape = (batch, shape[1], *size)
    if any(d < 1 for d in shape):
        raise InputError(f"cannot make an input for the dynamic shape {backend.input_shape}; give --size HxW")
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def input_size(backend: Backend, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The H, W to time: ``size`` checked against a feature graph's sizes (default: its profile's opt size,
    or its one size); None for a classifier, which runs at its fixed size."""
    layout = backend.info.features
    if layout is None:
        fixed = tuple(backend.input_shape[2:])
        if size is not None and tuple(size) != fixed:
            raise InputError(f"--size {size[0]}x{size[1]}: this graph runs at {fixed} only (no dynamic H/W)")
        return None
    chosen = tuple(size) if size is not None else layout.opt_size
    layout.check_size(*chosen, "the graph")
    return chosen  # type: ignore[return-value]


def runner(backend: Backend) -> Callable[[np.ndarray], Any]:
    """One timed call: the logits, or every named output of a feature graph (one output alone would let
    ONNX Runtime skip the later stages)."""
    layout = backend.info.features
    if layout is None:
        return backend
    names = layout.names
    return lambda x: backend.infer({backend.input_name: x}, outputs=names)


def check_batches(backend: Backend, batches: Sequence[int]) -> list[int]:
    lo, hi = backend.batch_range
    bad = [b for b in batches if not lo <= b <= hi]
    if bad:
        raise InputError(f"batch sizes {bad} are outside the backend's supported range {lo}..{hi}")
    return list(batches)


def time_batches(
    backend: Backend,
    batches: Sequence[int],
    *,
    warmup: int = 3,
    iters: int | None = 20,
    duration_s: float | None = None,
    progress: bool = True,
    size: tuple[int, int] | None = None,
) -> list[LatencyStats]:
    """Warm up, then time ``iters`` calls (or calls for ``duration_s``) per batch size; on a GPU each
    timed call is followed by one timed with CUDA events (see :func:`cuda_event_timer`)."""
    from tqdm import tqdm

    if (iters is None) == (duration_s is None):
        raise InputError("give either iters or duration_s")
    total = len(batches) * (warmup + iters) if iters is not None else None
    results = []
    call = runner(backend)
    with tqdm(
        total=total, desc="bench", unit="call", disable=not progress or not sys.stderr.isatty(), leave=False
    ) as bar:
        for batch in batches:
            bar.set_description(f"batch {batch}")
            x = make_batch(backend, batch, size=size)
            gpu_timer = cuda_event_timer(backend, x)
            for _ in range(warmup):
                call(x)
                if gpu_timer is not None:
                    gpu_timer()
                bar.update()
            wall, gpu = _timed_calls(call, x, iters, duration_s, gpu_timer, bar.update)
            stats = summarize(wall, batch)
            if gpu:
                stats = LatencyStats(**{**asdict(stats), "gpu": summarize(gpu, batch, "cuda_event")})
            results.append(stats)
    return results


def _timed_calls(
    backend: Callable[[np.ndarray], Any],
    x: np.ndarray,
    iters: int | None,
    duration_s: float | None,
    gpu_timer: Callable[[], float] | None,
    tick: Callable[[], Any],
) -> tuple[list[float], list[float]]:
    wall: list[float] = []
    gpu: list[float] = []
    started = time.perf_counter()
    while True:
        if iters is not None and len(wall) >= iters:
            break
        enough = len(wall) >= MIN_DURATION_ITERS
        over = time.perf_counter() - started >= (duration_s or 0.0) or len(wall) >= MAX_ITERS
        if duration_s is not None and enough and over:
            break
        t0 = time.perf_counter()
        backend(x)
        wall.append(time.perf_counter() - t0)
        if gpu_timer is not None:
            gpu.append(gpu_timer())
        tick()
    return wall, gpu


def on_gpu(backend: Backend) -> bool:
    """Whether the backend computes on a CUDA device (PyTorch on cuda, ORT CUDA/TensorRT EP, TensorRT)."""
    if getattr(getattr(backend, "device", None), "type", None) == "cuda" or backend.name == "tensorrt":
        return True
    return any(("CUDA" in p or "Tensorrt" in p) for p in _active_providers(backend))


def _active_providers(backend: Backend) -> list[str]:
    return list(backend.info.details.get("providers") or [])


def cuda_event_timer(backend: Backend, x: np.ndarray) -> Callable[[], float] | None:
    """A call of ``backend`` on ``x`` bracketed by CUDA events on torch's current stream (seconds).

    Where the events see the work: a backend with ``infer_torch`` (TensorRT: device-resident input,
    engine time without host copies) or PyTorch on CUDA (copies included). ``None`` otherwise, e.g.
    off the GPU, or ONNX Runtime's CUDA provider, which runs on a stream of its own."""
    infer_torch = getattr(backend, "infer_torch", None)
    is_torch_cuda = getattr(getattr(backend, "device", None), "type", None) == "cuda"
    if not (callable(infer_torch) or is_torch_cuda) or not on_gpu(backend):
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    if callable(infer_torch):
        device_x = torch.from_numpy(x).cuda()

        def call() -> Any:
            return infer_torch(device_x)
    else:

        def call() -> Any:
            return backend(x)

    def timed() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return timed


def matmul_peak(dtype: str = "bf16", *, n: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of one square ``n`` x ``n`` matmul in PyTorch on this CPU (``bf16`` or ``fp32``), best of
    the calls made in ``seconds``: the ceiling a model's achieved GFLOP/s is compared with."""
    import torch

    types = {"bf16": torch.bfloat16, "fp32": torch.float32}
    if dtype not in types:
        raise InputError(f"matmul peak dtype {dtype!r} is not one of {', '.join(types)}")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(types[dtype])
    b = torch.randn(n, n, generator=g).to(types[dtype])
    best = float("inf")
    with torch.inference_mode():
        torch.mm(a, b)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or best == float("inf"):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9
