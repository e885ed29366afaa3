"""Latency profiling, by job: timing and statistics (:mod:`.timing`), per-layer profiles (:mod:`.profile`),
concurrent load (:mod:`.load`), the report and its plot (:mod:`.report`, :mod:`.plot`), what was asked
(:mod:`.options`), one run (:mod:`.run`) and the backend comparison (:mod:`.compare`). The names below
load on first use, so ``msmlp.bench.options`` (what ``--help`` is built from) imports nothing heavy."""

from __future__ import annotations

from msmlp.lazy import by_module, lazy_exports

_LAZY = by_module(
    {
        "msmlp.bench.load": ("ConcurrencyStats", "check_service", "load_batcher", "load_service"),
        "msmlp.bench.options": ("BenchOptions",),
        "msmlp.bench.profile": ("profile_layers",),
        "msmlp.bench.report": (
            "format_compare",
            "format_concurrency",
            "format_profile",
            "format_table",
            "write_report",
        ),
        "msmlp.bench.run": ("run_benchmark",),
        "msmlp.bench.timing": ("LatencyStats", "make_batch", "matmul_peak", "summarize", "time_batches"),
    }
)

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
