"""Latency profiling: per-batch-size latency percentiles and throughput, per-layer profiles, and
concurrent load through the dynamic batcher or a running service.

Every figure comes with how it was taken: the number of timed iterations behind each percentile
(p99 of 20 samples is close to the maximum, and the report says so), wall-clock timing with
``time.perf_counter`` around each backend call (inputs already in host memory, outputs copied back),
plus CUDA-event timing when the backend runs on a GPU. Results go to a terminal table, ``bench.json``
and ``bench.png``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.errors import InputError
from msmlp.fileio import atomic_path
from msmlp.log import logger
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


@dataclass
class ConcurrencyStats:
    """Closed-loop load: ``clients`` callers each send one image at a time, latency per request."""

    target: str  # "batcher" or the URL
    clients: int
    requests: int  # sent
    answered: int
    errors: dict[str, int]
    wall_s: float
    latency: LatencyStats | None  # over answered requests, batch=1 each
    throughput_ips: float  # answered images / wall time
    batcher: dict[str, Any] = field(default_factory=dict)  # max_batch, max_delay_ms, mean batch size
    samples_ms: list[float] = field(default_factory=list)  # every answered request's latency


# -- timing a backend ----------------------------------------------------------------------------------
def make_batch(backend: Backend, batch: int, seed: int = 0) -> np.ndarray:
    """A random float32 input of the backend's shape (latency does not depend on the values here)."""
    shape = (batch, *backend.input_shape[1:])
    if any(d < 1 for d in shape):
        raise InputError(f"cannot make an input for the dynamic shape {backend.input_shape}")
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


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
) -> list[LatencyStats]:
    """Warm up, then time ``iters`` calls (or calls for ``duration_s``) per batch size; on a GPU each
    timed call is followed by one timed with CUDA events (see :func:`cuda_event_timer`)."""
    from tqdm import tqdm

    if (iters is None) == (duration_s is None):
        raise InputError("give either iters or duration_s")
    total = len(batches) * (warmup + iters) if iters is not None else None
    results = []
    with tqdm(total=total, desc="bench", unit="call", disable=not progress, leave=False) as bar:
        for batch in batches:
            bar.set_description(f"batch {batch}")
            x = make_batch(backend, batch)
            gpu_timer = cuda_event_timer(backend, x)
            for _ in range(warmup):
                backend(x)
                if gpu_timer is not None:
                    gpu_timer()
                bar.update()
            wall, gpu = _timed_calls(backend, x, iters, duration_s, gpu_timer, bar.update)
            stats = summarize(wall, batch)
            if gpu:
                stats = LatencyStats(**{**asdict(stats), "gpu": summarize(gpu, batch, "cuda_event")})
            results.append(stats)
    return results


def _timed_calls(
    backend: Backend,
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
    session = getattr(backend, "session", None)
    return list(session.get_providers()) if session is not None else []


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


# -- per-layer profiles --------------------------------------------------------------------------------
def profile_layers(
    backend: Backend, batch: int, *, onnx_path: str | Path | None = None, runs: int = 10, top: int = 15
) -> dict[str, Any]:
    """Where the time goes, from the backend's own profiler: ONNX Runtime's trace, torch.profiler, or
    a backend's ``layer_profile(x, runs)`` hook returning ``[{"name": layer, "ms": mean ms per run}]``
    (for TensorRT's IProfiler). ``{"available": False, "reason": ...}`` otherwise."""
    if backend.name == "onnxruntime" and onnx_path is not None:
        return profile_onnxruntime(onnx_path, make_batch(backend, batch), backend, runs=runs, top=top)
    if backend.name == "pytorch":
        return profile_torch(backend, make_batch(backend, batch), runs=runs, top=top)
    hook = getattr(backend, "layer_profile", None)
    if callable(hook):
        rows = hook(make_batch(backend, batch), runs)
        return _ranked("tensorrt", batch, runs, {r["name"]: r["ms"] * runs for r in rows}, {}, top)
    return {"available": False, "reason": f"the {backend.name} backend exposes no per-layer profiler"}


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
        providers = _active_providers(backend) or ["CPUExecutionProvider"]
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


# -- concurrent load -----------------------------------------------------------------------------------
def _closed_loop(
    clients: int, requests: int, call: Callable[[int, int], None], timeout_s: float, progress: bool, desc: str
) -> tuple[list[float], dict[str, int], float, int]:
    """``clients`` threads share ``requests`` calls, one at a time each; returns latencies (s), error
    counts by kind, wall time and the number sent. Bounded by ``requests`` and ``timeout_s``."""
    from tqdm import tqdm

    if clients < 1 or requests < 1:
        raise InputError(f"concurrency needs clients >= 1 and requests >= 1, got {clients} and {requests}")
    lock = threading.Lock()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent = 0
    deadline = time.perf_counter() + timeout_s

    def client(index: int) -> None:
        nonlocal sent
        while True:
            with lock:
                if sent >= requests or time.perf_counter() > deadline:
                    return
                seq = sent
                sent += 1
            t0 = time.perf_counter()
            try:
                call(index, seq)
            except Exception as exc:  # counted and reported, never raised out of a client thread
                with lock:
                    errors[getattr(exc, "kind", type(exc).__name__)] += 1
            else:
                with lock:
                    latencies.append(time.perf_counter() - t0)
            bar.update()

    with tqdm(total=requests, desc=desc, unit="req", disable=not progress, leave=False) as bar:
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.perf_counter()) + 30.0)
        wall = time.perf_counter() - start
    return latencies, dict(errors), wall, sent


def load_batcher(
    backend: Backend,
    clients: int,
    requests: int,
    *,
    max_batch: int = 8,
    max_delay_ms: float = 2.0,
    timeout_s: float = 600.0,
    progress: bool = True,
) -> ConcurrencyStats:
    """``clients`` threads each submit single images to a :class:`DynamicBatcher` over ``backend``."""
    from msmlp.runtime.batcher import BatchCounter, DynamicBatcher

    pool = make_batch(backend, min(requests, 64), seed=1)
    counter = BatchCounter()
    batcher = DynamicBatcher(backend, max_batch, max_delay_ms, max(256, clients * 2), observers=[counter])

    def call(_client: int, seq: int) -> None:
        batcher.submit(pool[seq % len(pool)]).result(timeout_s)

    with batcher:
        latencies, errors, wall, sent = _closed_loop(clients, requests, call, timeout_s, progress, "batcher")
    info = {
        "max_batch": max_batch,
        "max_delay_ms": max_delay_ms,
        "mean_batch": counter.mean_batch,
        "batches": counter.batches,
        "batch_sizes": dict(sorted(counter.sizes.items())),
    }
    return _concurrency("batcher", clients, sent, latencies, errors, wall, info)


def load_service(
    url: str, clients: int, requests: int, *, timeout_s: float = 600.0, progress: bool = True
) -> ConcurrencyStats:
    """``clients`` threads each POST the built-in sample photos to ``<url>/v1/classify``."""
    import httpx

    from msmlp.data.transforms import builtin_images

    endpoint = url.rstrip("/")
    if not endpoint.endswith("/v1/classify"):
        endpoint += "/v1/classify"
    images = [(p.name, p.read_bytes()) for p in builtin_images()]
    # One connection pool per client, made before timing: creating an httpx.Client costs tens of ms.
    sessions = [httpx.Client(timeout=timeout_s) for _ in range(clients)]

    class HTTPStatusError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"HTTP {status}")
            self.kind = f"HTTP {status}"

    def call(client: int, seq: int) -> None:
        name, data = images[seq % len(images)]
        response = sessions[client].post(endpoint, files={"file": (name, data, "image/jpeg")})
        if response.status_code != 200:
            raise HTTPStatusError(response.status_code)

    try:
        latencies, errors, wall, sent = _closed_loop(clients, requests, call, timeout_s, progress, "http")
    finally:
        for session in sessions:
            session.close()
    return _concurrency(endpoint, clients, sent, latencies, errors, wall, {})


def _concurrency(
    target: str,
    clients: int,
    sent: int,
    latencies: list[float],
    errors: dict[str, int],
    wall: float,
    info: dict[str, Any],
) -> ConcurrencyStats:
    stats = summarize(latencies, 1) if latencies else None
    throughput = len(latencies) / wall if wall else 0.0
    samples = [t * 1e3 for t in latencies]
    return ConcurrencyStats(
        target, clients, sent, len(latencies), errors, wall, stats, throughput, info, samples
    )


# -- reporting -----------------------------------------------------------------------------------------
def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for module in ("torch", "onnxruntime", "tensorrt"):
        try:
            info[module] = __import__(module).__version__
        except Exception:
            info[module] = None
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        info["gpu"] = None
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
    if profile.get("top_nodes"):
        lines.append("  slowest nodes:")
        lines += [
            f"  {r['node'][:48]:<48} {r['op']:<20} {r['ms_per_run']:>8.3f} ms"
            for r in profile["top_nodes"][:8]
        ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``bench.json`` and ``bench.png`` in ``out_dir`` (each written to a temp file, then renamed)."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "bench.json", out / "bench.png"
    for path, write in (
        (json_path, lambda p: p.write_text(json.dumps(report, indent=2) + "\n")),
        (png_path, lambda p: plot_report(report, p)),
    ):
        with atomic_path(path) as tmp:
            write(tmp)
    return json_path, png_path


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """Latency (p50/p90/p99) and throughput against batch size, side by side; for a service-only run,
    the latency distribution. Uses matplotlib's Agg canvas directly (no pyplot global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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


# -- the whole run -------------------------------------------------------------------------------------
@dataclass
class BenchOptions:
    """What ``msmlp bench`` was asked; ``None`` means the default."""

    model: str | None = None
    weights: str | None = None
    onnx: str | None = None
    engine: str | None = None
    url: str | None = None
    backend: str | None = None  # pytorch | onnxruntime | tensorrt
    batches: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    warmup: int = 3
    iters: int | None = 20
    duration_s: float | None = None
    threads: int | None = None
    providers: Any = None  # ONNX Runtime: None (CPU), "auto", or names
    concurrency: int | None = None
    requests: int | None = None
    max_delay_ms: float = 2.0
    profile: bool = False
    progress: bool = True


def run_benchmark(opts: BenchOptions) -> dict[str, Any]:
    """Run what ``opts`` asks and return the report (the content of bench.json)."""
    _check_options(opts)
    report: dict[str, Any] = {"host": host_info(), "settings": _settings(opts)}
    if opts.url is not None:
        clients = opts.concurrency or 16
        conc = load_service(opts.url, clients, opts.requests or clients * 8, progress=opts.progress)
        report.update(target={"kind": "url", "url": opts.url}, backend=None, results=[], profile=None)
        report["concurrency"] = _conc_dict(conc, keep_samples=True)
        return report
    with open_target(opts) as (backend, target, onnx_path):
        report["target"] = target
        report["backend"] = {**backend.describe(), "threads": opts.threads}
        batches = check_batches(backend, opts.batches)
        stats = time_batches(
            backend,
            batches,
            warmup=opts.warmup,
            iters=opts.iters,
            duration_s=opts.duration_s,
            progress=opts.progress,
        )
        report["results"] = [_stats_dict(s) for s in stats]
        report["profile"] = (
            profile_layers(backend, max(batches), onnx_path=onnx_path) if opts.profile else None
        )
        report["concurrency"] = None
        if opts.concurrency:
            requests = opts.requests or opts.concurrency * 8
            conc = load_batcher(
                backend,
                opts.concurrency,
                requests,
                max_batch=max(batches),
                max_delay_ms=opts.max_delay_ms,
                progress=opts.progress,
            )
            report["concurrency"] = _conc_dict(conc, keep_samples=False)
    return report


def _check_options(opts: BenchOptions) -> None:
    given = [k for k in ("model", "onnx", "engine", "url") if getattr(opts, k) is not None]
    if len(given) != 1:
        raise InputError(f"give exactly one of --model, --onnx, --engine or --url (got {given or 'none'})")
    if not opts.batches or any(b < 1 for b in opts.batches):
        raise InputError(f"batch sizes must be positive integers, got {opts.batches}")
    if opts.warmup < 0:
        raise InputError(f"--warmup must be >= 0, got {opts.warmup}")
    if opts.duration_s is not None:
        if opts.duration_s <= 0:
            raise InputError(f"--duration-s must be > 0, got {opts.duration_s}")
        opts.iters = None
    elif opts.iters is None or opts.iters < 1:
        raise InputError(f"--iters must be >= 1, got {opts.iters}")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise InputError(f"--concurrency must be >= 1, got {opts.concurrency}")
    if opts.threads is not None and opts.threads < 1:
        raise InputError(f"--threads must be >= 1, got {opts.threads}")
    if opts.backend not in (None, "pytorch", "onnxruntime", "tensorrt"):
        raise InputError(f"--backend {opts.backend!r} is not one of pytorch, onnxruntime, tensorrt")
    opts.batches = sorted(set(opts.batches))


def _settings(opts: BenchOptions) -> dict[str, Any]:
    keys = ("batches", "warmup", "iters", "duration_s", "threads", "concurrency", "requests", "max_delay_ms")
    return {k: getattr(opts, k) for k in keys}


@contextmanager
def open_target(opts: BenchOptions) -> Iterator[tuple[Backend, dict[str, Any], Path | None]]:
    """The loaded backend to bench, a description of it, and the ONNX path (for ORT profiling).

    ``--model`` is exported to a temporary ONNX file and run in ONNX Runtime (the deployable graph),
    unless ``--backend pytorch``; without ``--weights`` it gets synthetic contributing weights."""
    import tempfile

    from msmlp.runtime import open_backend

    kind = "model" if opts.model else "onnx" if opts.onnx else "engine"
    default = {"model": "onnxruntime", "onnx": "onnxruntime", "engine": "tensorrt"}[kind]
    choice = opts.backend or default
    if (kind == "engine" and choice != "tensorrt") or (kind == "onnx" and choice == "pytorch"):
        raise InputError(f"--backend {choice} cannot run --{kind}; choose another --backend or artefact")
    if choice == "tensorrt" and kind != "engine":
        raise InputError(
            "--backend tensorrt benches a built plan: build one with `msmlp build`, then --engine PLAN"
        )
    with tempfile.TemporaryDirectory(prefix="msmlp-bench-") as tmp:
        target: dict[str, Any] = {"kind": kind}
        onnx_path = Path(opts.onnx) if opts.onnx else None
        if kind == "model":
            module, target = _bench_model(opts)
            if choice == "pytorch":
                from msmlp.runtime.torch_backend import TorchBackend

                backend: Backend = TorchBackend(module)
            else:
                onnx_path = _export_temp(module, opts, Path(tmp))
                target["onnx"] = "temporary export (export_onnx, opset 17)"
                backend = open_backend(onnx=onnx_path, threads=opts.threads, providers=opts.providers)
        else:
            target["path"] = str(opts.onnx or opts.engine)
            backend = open_backend(
                onnx=opts.onnx, engine=opts.engine, threads=opts.threads, providers=opts.providers
            )
        with _torch_threads(opts.threads if choice == "pytorch" else None), backend:
            yield backend, target, onnx_path


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count for the run, restored afterwards (it is process-wide)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _bench_model(opts: BenchOptions) -> tuple[Any, dict[str, Any]]:
    import msmlp
    from msmlp.models.weights import make_contributing

    assert opts.model is not None
    module = msmlp.create_model(opts.model, pretrained=opts.weights)
    if opts.weights is None:
        make_contributing(module, seed=0)
        logger.warning(
            "no --weights: timing %s with synthetic weights (make_contributing, seed 0)", opts.model
        )
    weights = opts.weights or "synthetic: make_contributing(seed=0) (latency does not depend on the values)"
    return module.eval(), {"kind": "model", "model": opts.model, "weights": weights}


def _export_temp(module: Any, opts: BenchOptions, folder: Path) -> Path:
    import msmlp
    from msmlp.export.onnx import export_onnx

    assert opts.model is not None
    top = max(opts.batches)
    path = folder / f"{opts.model}.onnx"
    logger.info("exporting %s to a temporary ONNX file for ONNX Runtime", opts.model)
    return export_onnx(
        module, path, config=msmlp.get_config(opts.model), batch=(1, top, top), model_name=opts.model
    )


def _stats_dict(stats: LatencyStats) -> dict[str, Any]:
    return asdict(stats)


def _conc_dict(conc: ConcurrencyStats, keep_samples: bool) -> dict[str, Any]:
    data = asdict(conc)
    samples = data.pop("samples_ms")
    if keep_samples:
        data["latencies_ms"] = samples
    return data
