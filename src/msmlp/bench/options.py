"""What ``msmlp bench`` was asked (:class:`BenchOptions`) and the checks that quote a bad value before
anything is exported or timed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msmlp.errors import InputError
from msmlp.runtime import backend_names


@dataclass
class BenchOptions:
    """What ``msmlp bench`` was asked; ``None`` means the default."""

    model: str | None = None
    weights: str | Path | None = None
    seed: int = 0
    onnx: str | Path | None = None
    engine: str | Path | None = None
    url: str | None = None
    onnx_dir: str | Path | None = None  # --compare: an msmlp-export output folder
    backend: str = "auto"
    precision: str | None = None  # None (fp32) or "bf16": OpenVINO hint / PyTorch autocast
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
    compare: bool = False
    int8: bool = False  # --compare --model: also export and compare an INT8 graph
    progress: bool = True


def check_options(opts: BenchOptions) -> None:
    """Quote the bad value, name the option, before anything is exported or timed."""
    sources = ("model", "onnx_dir") if opts.compare else ("model", "onnx", "engine", "url")
    given = [k for k in ("model", "onnx", "engine", "url", "onnx_dir") if getattr(opts, k) is not None]
    if len(given) != 1 or given[0] not in sources:
        names = " or ".join("--" + s.replace("_", "-") for s in sources)
        raise InputError(
            f"give exactly one of {names}{' with --compare' if opts.compare else ''} (got {given or 'none'})"
        )
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
    if opts.compare and opts.duration_s is not None:
        raise InputError("--compare runs --iters interleaved rounds; --duration-s does not apply")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise InputError(f"--concurrency must be >= 1, got {opts.concurrency}")
    if opts.threads is not None and opts.threads < 1:
        raise InputError(f"--threads must be >= 1, got {opts.threads}")
    if opts.backend not in backend_names():
        raise InputError(f"--backend {opts.backend!r} is not one of {', '.join(backend_names())}")
    if opts.precision not in (None, "bf16"):
        raise InputError(f"--precision {opts.precision!r} is not one of f32, bf16")
    opts.batches = sorted(set(opts.batches))
