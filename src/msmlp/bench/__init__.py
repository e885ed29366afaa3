"""Latency profiling, by job: timing and statistics (:mod:`.timing`), per-layer profiles (:mod:`.profile`),
concurrent load (:mod:`.load`), the report and its plot (:mod:`.report`, :mod:`.plot`), what was asked
(:mod:`.options`), one run (:mod:`.run`) and the backend comparison (:mod:`.compare`). The names below
load on first use, so ``msmlp.bench.options`` (what ``--help`` is built from) imports nothing heavy."""

from __future__ import annotations

from msmlp.lazy import lazy_exports

_LAZY = {
    "BenchOptions": "msmlp.bench.options",
    "ConcurrencyStats": "msmlp.bench.load",
    "LatencyStats": "msmlp.bench.timing",
    "check_service": "msmlp.bench.load",
    "format_compare": "msmlp.bench.report",
    "format_concurrency": "msmlp.bench.report",
    "format_profile": "msmlp.bench.report",
    "format_table": "msmlp.bench.report",
    "load_batcher": "msmlp.bench.load",
    "load_service": "msmlp.bench.load",
    "make_batch": "msmlp.bench.timing",
    "matmul_peak": "msmlp.bench.timing",
    "profile_layers": "msmlp.bench.profile",
    "run_benchmark": "msmlp.bench.run",
    "summarize": "msmlp.bench.timing",
    "time_batches": "msmlp.bench.timing",
    "write_report": "msmlp.bench.report",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
