"""Profile latency and throughput: per batch size, per layer, under concurrent load, or across backends.

For each batch size: warm-up calls, then timed calls (--iters, or --duration-s per size); reports
p50/p90/p95/p99, mean, std and throughput (images/s), with CUDA-event timing as well on a GPU.
--profile adds a per-layer profile (ONNX Runtime's profiler, torch.profiler, OpenVINO's performance
counters, or TensorRT's layer profiler). --concurrency N drives the dynamic batcher with N client threads
(or, with --url, a running `msmlp serve`). --compare runs every installed backend x precision on the same
real-image batch in one interleaved run, with agreement against eager FP32 and achieved GFLOP/s against a
measured matmul peak; --data DIR adds each row's top-1/top-5 on labelled images. Writes a table to
the terminal and bench.json + bench.png to --out.

--model NAME is exported to a temporary ONNX graph and timed on --backend (auto: the fastest CPU backend
at the graph's own precision), unless --backend pytorch; without --weights it uses synthetic weights
(latency does not depend on them).

Examples:
  msmlp bench --model s2mlpv2_small --batch 1,2,4,8
  msmlp bench --onnx out/model.onnx --backend openvino --precision bf16 --batch 8 --profile
  msmlp bench --compare --model s2mlpv2_small --int8 --batch 8
  msmlp bench --compare --onnx-dir out/s2mlpv2_small --batch 1,8
  msmlp bench --compare --onnx-dir out/s2mlpv2_small --data val/ --batch 8
  msmlp bench --url http://127.0.0.1:8000 --concurrency 16 --requests 200
"""

from __future__ import annotations

import argparse

from msmlp.bench.options import BenchOptions  # light: declarations only
from msmlp.commands.args import add_backend_args, add_source_args
from msmlp.optionspec import add_options, from_args

HELP = "latency/throughput per batch size, per-layer profile, concurrent load, backend comparison"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_args(p, url=True, required=False)
    add_backend_args(p)
    add_options(p, BenchOptions)
    p.add_argument("--out", default="bench_out", metavar="DIR", help="folder for bench.json/bench.png")


def run(args: argparse.Namespace) -> int:
    from msmlp.bench import (
        format_compare,
        format_concurrency,
        format_profile,
        format_table,
        run_benchmark,
        write_report,
    )

    opts = from_args(BenchOptions, args)
    report = run_benchmark(opts)
    backend = report.get("backend") or {}
    if report.get("compare"):
        print(format_compare(report["compare"]))
    if report["results"]:
        target = report["target"].get("model") or report["target"].get("path")
        size = "x".join(map(str, report.get("input_size") or ()))
        print(
            f"{target} on {backend.get('backend')} ({backend.get('precision')}), {size}, wall-clock per call:"
        )
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
