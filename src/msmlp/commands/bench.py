"""Profile latency and throughput: per batch size, per layer, and under concurrent load.

For each batch size: warm-up calls, then timed calls (--iters, or --duration-s per size); reports
p50/p90/p95/p99, mean, std and throughput (images/s), with CUDA-event timing as well on a GPU.
--profile adds a per-layer profile (ONNX Runtime's profiler, torch.profiler, or the TensorRT backend's
layer profiler when it has one). --concurrency N drives the dynamic batcher with N client threads
(or, with --url, a running `msmlp serve`). Writes a table to the terminal and bench.json + bench.png
to --out.

--model NAME is exported to a temporary ONNX file and timed in ONNX Runtime (the graph you deploy),
unless --backend pytorch; without --weights it uses synthetic weights (latency does not depend on them).

Examples:
  msmlp bench --model s2mlpv2_small --batch 1,2,4,8
  msmlp bench --onnx out/model.onnx --batch 8 --profile --concurrency 64
  msmlp bench --url http://127.0.0.1:8000 --concurrency 16 --requests 200
"""

from __future__ import annotations

import argparse

HELP = "latency/throughput per batch size, per-layer profile, concurrent load; table, JSON and plot"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help="registered model (exported to a temporary ONNX)")
    src.add_argument("--onnx", metavar="PATH", help="ONNX file")
    src.add_argument("--engine", metavar="PATH", help="TensorRT plan")
    src.add_argument("--url", help="a running msmlp service (concurrency mode only)")
    p.add_argument("--weights", metavar="PATH", help="checkpoint for --model (default: synthetic weights)")
    p.add_argument(
        "--backend",
        choices=["pytorch", "onnxruntime", "tensorrt"],
        help="runtime (default: onnxruntime for --model/--onnx, tensorrt for --engine)",
    )
    p.add_argument("--batch", default="1,2,4,8", metavar="N,N", help="batch sizes (default: 1,2,4,8)")
    p.add_argument("--warmup", type=int, default=3, metavar="N", help="warm-up calls per size (default: 3)")
    runs = p.add_mutually_exclusive_group()
    runs.add_argument("--iters", type=int, default=20, metavar="N", help="timed calls per size (default: 20)")
    runs.add_argument("--duration-s", type=float, metavar="S", help="time each size for S seconds instead")
    p.add_argument("--threads", type=int, metavar="N", help="intra-op threads (ONNX Runtime / PyTorch)")
    p.add_argument(
        "--providers",
        metavar="P[,P]",
        help="ONNX Runtime execution providers: cpu (default), cuda, tensorrt, or auto (GPU when present)",
    )
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
    p.add_argument("--out", default="bench_out", metavar="DIR", help="folder for bench.json/bench.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from msmlp.bench import (
        BenchOptions,
        format_concurrency,
        format_profile,
        format_table,
        run_benchmark,
        write_report,
    )
    from msmlp.commands import parse_int_list
    from msmlp.commands.serve import parse_providers

    opts = BenchOptions(
        model=args.model,
        weights=args.weights,
        onnx=args.onnx,
        engine=args.engine,
        url=args.url,
        backend=args.backend,
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
        progress=not args.no_progress,
    )
    report = run_benchmark(opts)
    backend = report.get("backend") or {}
    if report["results"]:
        target = report["target"].get("model") or report["target"].get("path")
        print(f"{target} on {backend.get('backend')} ({backend.get('precision')}), wall-clock per call:")
        print(format_table(report["results"]))
    if report.get("profile"):
        print(format_profile(report["profile"]))
    if report.get("concurrency"):
        print(format_concurrency(report["concurrency"]))
    json_path, png_path = write_report(report, args.out)
    print(f"wrote {json_path} and {png_path}")
    return 0
