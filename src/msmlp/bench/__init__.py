"""Latency profiling, by job: timing and statistics (:mod:`.timing`), per-layer profiles (:mod:`.profile`),
concurrent load (:mod:`.load`), the report and its plot (:mod:`.report`, :mod:`.plot`), one run
(:mod:`.run`) and the backend comparison (:mod:`.compare`). Heavy libraries load only when used."""

from __future__ import annotations

from msmlp.bench.load import ConcurrencyStats, check_service, load_batcher, load_service
from msmlp.bench.profile import profile_layers
from msmlp.bench.report import format_compare, format_concurrency, format_profile, format_table, write_report
from msmlp.bench.run import BenchOptions, run_benchmark
from msmlp.bench.timing import LatencyStats, make_batch, matmul_peak, summarize, time_batches

__all__ = [
    "BenchOptions",
    "ConcurrencyStats",
    "LatencyStats",
    "check_service",
    "format_compare",
    "format_concurrency",
    "format_profile",
    "format_table",
    "load_batcher",
    "load_service",
    "make_batch",
    "matmul_peak",
    "profile_layers",
    "run_benchmark",
    "summarize",
    "time_batches",
    "write_report",
]
