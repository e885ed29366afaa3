"""One ``msmlp bench`` run: check the options, open the target through :func:`msmlp.runtime.open_backend`
(``--model`` is first exported to a temporary ONNX graph, the thing you deploy), time it per batch size,
and optionally profile it per layer and load it with concurrent clients."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from msmlp.bench.compare import run_compare
from msmlp.bench.load import load_batcher, load_service
from msmlp.bench.options import BenchOptions, check_options
from msmlp.bench.prepare import export_temp_onnx, torch_threads
from msmlp.bench.profile import profile_layers
from msmlp.bench.report import host_info
from msmlp.bench.timing import check_batches, input_size, time_batches
from msmlp.errors import InputError
from msmlp.runtime import open_backend
from msmlp.runtime.base import Backend

__all__ = [
    "BenchOptions",
    "check_options",
    "export_temp_onnx",
    "open_target",
    "run_benchmark",
    "torch_threads",
]


def run_benchmark(opts: BenchOptions) -> dict[str, Any]:
    """Run what ``opts`` asks and return the report (the content of bench.json)."""
    check_options(opts)
    report: dict[str, Any] = {"host": host_info(), "settings": _settings(opts)}
    if opts.compare:
        report.update(run_compare(opts))
        return report
    if opts.url is not None:
        clients = opts.concurrency or 16
        conc = load_service(opts.url, clients, opts.requests or clients * 8, progress=opts.progress)
        report.update(target={"kind": "url", "url": opts.url}, backend=None, results=[], profile=None)
        report["concurrency"] = conc_dict(conc, keep_samples=True)
        return report
    with open_target(opts) as (backend, target):
        report["target"] = target
        report["backend"] = backend.describe()
        batches = check_batches(backend, opts.batches)
        size = input_size(backend, opts.size)
        report["input_size"] = list(size) if size else list(backend.input_shape[2:])
        stats = time_batches(
            backend,
            batches,
            warmup=opts.warmup,
            iters=opts.iters,
            duration_s=opts.duration_s,
            progress=opts.progress,
            size=size,
        )
        report["results"] = [asdict(s) for s in stats]
        report["profile"] = profile_layers(backend, max(batches), size=size) if opts.profile else None
        report["concurrency"] = None
        if opts.concurrency and size is not None:
            raise InputError("--concurrency on a feature graph is not supported yet; time it without")
        if opts.concurrency:
            conc = load_batcher(
                backend,
                opts.concurrency,
                opts.requests or opts.concurrency * 8,
                max_batch=max(batches),
                max_delay_ms=opts.max_delay_ms,
                progress=opts.progress,
            )
            report["concurrency"] = conc_dict(conc, keep_samples=False)
    return report


def _settings(opts: BenchOptions) -> dict[str, Any]:
    keys = ("batches", "warmup", "iters", "duration_s", "threads", "concurrency", "requests", "max_delay_ms")
    return {k: getattr(opts, k) for k in keys}


@contextmanager
def open_target(opts: BenchOptions) -> Iterator[tuple[Backend, dict[str, Any]]]:
    """The loaded backend to bench and a description of what it runs.

    ``--model`` runs in PyTorch with ``--backend pytorch``; otherwise it is exported to a temporary ONNX
    graph (:func:`export_temp_onnx`) and opened like ``--onnx``."""
    kind = "model" if opts.model else "onnx" if opts.onnx else "engine"
    if kind == "model" and opts.backend == "tensorrt":
        raise InputError(
            "--backend tensorrt benches a built plan: build one with `msmlp build`, then --engine PLAN"
        )
    with tempfile.TemporaryDirectory(prefix="msmlp-bench-") as tmp:
        target: dict[str, Any] = {"kind": kind}
        common = {"threads": opts.threads, "precision": opts.precision, "seed": opts.seed}
        if kind == "model" and opts.backend == "pytorch":
            backend = open_backend(model=opts.model, weights=opts.weights, backend="pytorch", **common)
            target.update(model=opts.model, weights=_weights_text(opts))
        elif kind == "model":
            assert opts.model is not None
            path = export_temp_onnx(opts.model, opts.weights, opts.seed, Path(tmp), max(opts.batches))
            target.update(
                model=opts.model, weights=_weights_text(opts), onnx="temporary export (export_onnx)"
            )
            backend = open_backend(onnx=path, backend=opts.backend, providers=opts.providers, **common)
        else:
            target["path"] = str(opts.onnx or opts.engine)
            backend = open_backend(
                onnx=opts.onnx, engine=opts.engine, backend=opts.backend, providers=opts.providers, **common
            )
        with torch_threads(opts.threads if backend.name == "pytorch" else None), backend:
            yield backend, target


def _weights_text(opts: BenchOptions) -> str:
    if opts.weights is not None:
        return str(opts.weights)
    return f"synthetic: make_contributing(seed={opts.seed}) (latency does not depend on the values)"


def conc_dict(conc: Any, keep_samples: bool) -> dict[str, Any]:
    data = asdict(conc)
    samples = data.pop("samples_ms")
    if keep_samples:
        data["latencies_ms"] = samples
    return data
