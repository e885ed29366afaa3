"""Profile latency and throughput: per batch size, per layer, under concurrent load, or across backends.

For each batch size: warm-up calls, then timed calls (--iters, or --duration-s per size); reports
p50/p90/p95/p99, mean, std and throughput (images/s), with CUDA-event timing as well on a GPU.
--profile adds a per-layer profile (ONNX Runtime's profiler, torch.profiler, OpenVINO's performance
counters, or TensorRT's layer profiler). --concurrency N drives the dynamic batcher with N client threads
(or, with --url, a running `msmlp serve`). --compare runs every installed backend x precision on the same
real-image batch in one interleaved run, with agreement against eager FP32 and achieved GFLOP/s against a
measured matmul peak. Writes a table to the terminal and bench.json + bench.png to --out.

--model NAME is exported to a temporary ONNX graph and timed on --backend (auto: the fastest CPU backend
at the graph's own precision), unless --backend pytorch; without --weights it uses synthetic weights
(latency does not depend on them).

Examples:
  msmlp bench --model s2mlpv2_small --batch 1,2,4,8
  msmlp bench --onnx out/model.onnx --backend openvino --precision bf16 --batch 8 --profile
  msmlp bench --compare --model s2mlpv2_small --int8 --batch 8
  msmlp bench --compare --onnx-dir out/s2mlpv2_small --batch 1,8
  msmlp bench --url http://127.0.0.1:8000 --concurrency 16 --requests 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

from msmlp.commands.args import add_backend_args, add_source_args

HELP = "latency/throughput per batch size, per-layer profile, concurrent load, backend comparison"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_args(p, url=True, required=False)
    add_backend_args(p)
    p.add_argument("--batch", default="1,2,4,8", metavar="N,N", help="batch sizes (default: 1,2,4,8)")
    p.add_argument("--warmup", type=int, default=3, metavar="N", help="warm-up calls per size (default: 3)")
    runs = p.add_mutually_exclusive_group()
    runs.add_argument(
        "--iters", type=int, default=20, metavar="N", help="timed calls (--compare: rounds) per size (20)"
    )
    runs.add_argument("--duration-s", type=float, metavar="S", help="time each size for S seconds instead")
    p.add_argument("--concurrency", type=int, metavar="N", help="also run N concurrent clients")
    p.add_argument(
        "--requests", type=int, metavar="N", help="requests in concurrency mode (default: 8 per client)"
    )
    p.add_argument(
        "--max-delay-ms",
        type=float,
        default=2.0,
        metavar="MS",
        help="batcher window in concurrency mode (2 ms)",
    )
    p.add_argument("--profile", action="store_true", help="per-layer profile at the largest batch size")
    cmp = p.add_argument_group("backend comparison")
    cmp.add_argument(
        "--compare",
        action="store_true",
        help="every installed backend x precision on the same real images, one interleaved run "
        "(with --model or --onnx-dir)",
    )
    cmp.add_argument("--onnx-dir", type=Path, metavar="DIR", help="msmlp-export output folder for --compare")
    cmp.add_argument(
        "--int8", action="store_true", help="--compare --model: also export and compare an INT8 Q/DQ graph"
    )
    p.add_argument("--out", default="bench_out", metavar="DIR", help="folder for bench.json/bench.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from msmlp.bench import (
        BenchOptions,
        format_compare,
        format_concurrency,
        format_profile,
        format_table,
        run_benchmark,
        write_report,
    )
    from msmlp.commands import check_positive, parse_int_list
    from msmlp.commands.args import parse_providers

    if args.threads is not None:
        check_positive(args.threads, "--threads")
    opts = BenchOptions(
        model=args.model,
        weights=args.weights,
        seed=args.seed,
        onnx=args.onnx,
        engine=args.engine,
        url=args.url,
        onnx_dir=args.onnx_dir,
        backend=args.backend,
        precision={"f32": None}.get(args.precision, args.precision),
        batches=parse_int_list(args.batch, "--batch") or [],
        warmup=args.warmup,
        iters=args.iters,
        duration_s=args.duration_s,
        threads=args.threads,
        providers=parse_providers(args.providers),
        concurrency=args.concurrency,
        requests=args.requests,
        max_delay_ms=args.max_delay_ms,
        profile=args.profile,
        compare=args.compare,
        int8=args.int8,
        progress=not args.no_progress,
    )
    report = run_benchmark(opts)
    backend = report.get("backend") or {}
    if report.get("compare"):
        print(format_compare(report["compare"]))
    if report["results"]:
        target = report["target"].get("model") or report["target"].get("path")
        print(f"{target} on {backend.get('backend')} ({backend.get('precision')}), wall-clock per call:")
        print(format_table(report["results"]))
    if report.get("profile"):
        print(format_profile(report["profile"]))
    if report.get("concurrency"):
        print(format_concurrency(report["concurrency"]))
    json_path, png_path = write_report(report, args.out)
    if png_path is None:
        print(f'wrote {json_path} (no bench.png: matplotlib is not installed; pip install "msmlp[plot]")')
    else:
        print(f"wrote {json_path} and {png_path}")
    return 0
