"""What ``msmlp bench`` was asked, declared once, and the checks that quote a bad value before anything
is exported or timed: each field gives its CLI flag (or names the shared
group in :mod:`msmlp.commands.args` it comes from), the options object and its conversion from text.
Imports nothing heavy: ``msmlp bench --help`` is built from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msmlp.errors import InputError
from msmlp.optionspec import option, parse_input_size, parse_int_list, parse_providers

COMPARE = "backend comparison"


def _f32_is_none(text: str) -> str | None:
    """``--precision f32`` is the default precision (None); ``bf16`` is the hint."""
    return None if text == "f32" else text


@dataclass
class BenchOptions:
    """What ``msmlp bench`` was asked; ``None`` means the default."""

    # the source and backend groups, shared with other commands (commands/args.py)
    model: str | None = option(None, kind="shared")
    weights: str | Path | None = option(None, kind="shared")
    seed: int = option(0, kind="shared")
    onnx: str | Path | None = option(None, kind="shared")
    engine: str | Path | None = option(None, kind="shared")
    url: str | None = option(None, kind="shared")
    backend: str = option("auto", kind="shared")
    precision: str | None = option(None, kind="shared", parse=_f32_is_none)  # None (fp32) or "bf16"
    threads: int | None = option(None, kind="shared")
    providers: Any = option(None, kind="shared", parse=parse_providers)  # None (CPU), "auto", or names
    # bench's own options
    batches: list[int] = option(
        factory=lambda: [1, 2, 4, 8],
        flag="--batch",
        parse=lambda text: parse_int_list(text, "--batch"),
        metavar="N,N",
        help="batch sizes (default: 1,2,4,8)",
    )
    size: tuple[int, int] | None = option(
        None,
        parse=lambda text: parse_input_size(text, "--size"),
        metavar="SIDE|HxW",
        help="input size for a graph with dynamic H/W (msmlp-export --features --dynamic-size), e.g. "
        "800x1344 (default: its profile's opt size); every output is timed",
    )
    warmup: int = option(3, type=int, metavar="N", help="warm-up calls per size (default: 3)")
    iters: int | None = option(
        20, type=int, metavar="N", exclusive="runs", help="timed calls (--compare: rounds) per size (20)"
    )
    duration_s: float | None = option(
        None, type=float, metavar="S", exclusive="runs", help="time each size for S seconds instead"
    )
    concurrency: int | None = option(None, type=int, metavar="N", help="also run N concurrent clients")
    requests: int | None = option(
        None, type=int, metavar="N", help="requests in concurrency mode (default: 8 per client)"
    )
    max_delay_ms: float = option(
        2.0, type=float, metavar="MS", help="batcher window in concurrency mode (2 ms)"
    )
    profile: bool = option(False, kind="flag", help="per-layer profile at the largest batch size")
    compare: bool = option(
        False,
        kind="flag",
        group=COMPARE,
        help="every installed backend x precision on the same real images, one interleaved run "
        "(with --model or --onnx-dir)",
    )
    torch_compile: bool = option(
        False,
        kind="flag",
        group=COMPARE,
        help="--compare: also a torch.compile row (inductor, freezing, BF16 autocast), what a PyTorch user "
        "tries next; its compile time (often minutes) is reported apart and not in the timings",
    )
    onnx_dir: str | Path | None = option(
        None, type=Path, metavar="DIR", group=COMPARE, help="msmlp-export output folder for --compare"
    )
    int8: bool = option(
        False,
        kind="flag",
        group=COMPARE,
        help="--compare --model: also export and compare an INT8 Q/DQ graph",
    )
    data: str | Path | None = option(
        None,
        type=Path,
        metavar="DIR|CSV",
        group=COMPARE,
        help="--compare: also top-1/top-5 (95%% CI) of every row on this labelled set, any layout of "
        "`msmlp eval --data`, with the top-1 difference against eager FP32",
    )
    progress: bool = option(True, kind="negated", flag="--no-progress", help="no progress bar")


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
    if opts.data is not None:
        if not opts.compare:
            raise InputError(f"--data {str(opts.data)!r} adds accuracy columns to --compare; add --compare")
        from msmlp.bench.accuracy import open_data

        open_data(Path(opts.data))  # a bad set, or a file that is not an image: one line, before any work
    if opts.compare and opts.duration_s is not None:
        raise InputError("--compare runs --iters interleaved rounds; --duration-s does not apply")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise InputError(f"--concurrency must be >= 1, got {opts.concurrency}")
    if opts.threads is not None and opts.threads < 1:
        raise InputError(f"--threads must be >= 1, got {opts.threads}")
    from msmlp.runtime import backend_names  # the table; not needed to build --help

    if opts.backend not in backend_names():
        raise InputError(f"--backend {opts.backend!r} is not one of {', '.join(backend_names())}")
    if opts.precision not in (None, "bf16"):
        raise InputError(f"--precision {opts.precision!r} is not one of f32, bf16")
    opts.batches = sorted(set(opts.batches))
