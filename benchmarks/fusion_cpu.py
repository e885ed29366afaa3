"""Where the CPU default's time goes, from OpenVINO's per-layer counters, for ONNX files already exported:
each file's share of kernel time in compute-bound layers (FullyConnected, dense Convolution) and in the
memory-bound rest, its fraction of the BF16 matmul peak measured in the same run, and its speed against
the first row. For comparing graph forms (issue 21): export the files with msmlp-export or
benchmarks/int8_cpu.py, then time them here in one interleaved run.

  python benchmarks/fusion_cpu.py --model s2mlpv2_small bf16=out/model.onnx int8=out/model.int8.onnx

Every row runs with the bf16 hint (the default's). Timing: interleaved rounds (bench_common.timings);
profiles: each row's quickest of ``--profile-repeats`` turns, taken in turns.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench_common import cpu_record, timings, write_json

COMPUTE = ("FullyConnected", "FullyConnectedQuantizedLegacy", "Convolution", "MatMul")


def shares(profile: dict[str, Any]) -> dict[str, Any]:
    """Kernel ms by layer type and the compute-bound / memory-bound split; a depthwise (``_dw``) kernel
    is memory-bound whatever its layer type."""
    by_type: dict[str, float] = defaultdict(float)
    compute = 0.0
    for node in profile["nodes"]:
        by_type[f"{node['op']} {node['exec_type']}"] += node["ms_per_run"]
        if node["op"] in COMPUTE and "_dw" not in node["exec_type"]:
            compute += node["ms_per_run"]
    total = sum(by_type.values())
    top = dict(sorted(((k, round(v, 2)) for k, v in by_type.items()), key=lambda kv: -kv[1])[:12])
    return {
        "kernel_ms": round(total, 2),
        "compute_ms": round(compute, 2),
        "memory_bound_share": round(1 - compute / total, 3),
        "top": top,
    }


def main() -> int:
    from msmlp.bench.timing import matmul_peak
    from msmlp.models.complexity import complexity
    from msmlp.models.registry import create_model
    from msmlp.runtime.openvino import OpenVINOBackend

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the registered model the files were exported from")
    p.add_argument("rows", nargs="+", metavar="LABEL=FILE")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--profile-runs", type=int, default=5)
    p.add_argument("--profile-repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("fusion_cpu.json"))
    args = p.parse_args()
    files = dict(r.split("=", 1) for r in args.rows)
    module = create_model(args.model)
    gflop = 2 * complexity(module, module.deploy_config.input_size).macs / 1e9
    cpu = cpu_record()
    peak = matmul_peak("bf16", n=2048, seconds=0.5)
    rows = {
        k: OpenVINOBackend(f, inference_precision="bf16", cache_dir=False).load() for k, f in files.items()
    }
    ms = timings(rows, args.rounds)
    peak = max(peak, matmul_peak("bf16", n=2048, seconds=0.5))
    import numpy as np

    x = np.random.default_rng(0).standard_normal((8, *module.deploy_config.input_size), dtype=np.float32)
    profiles: dict[str, dict[str, Any]] = {}
    for _ in range(args.profile_repeats):
        for k, r in rows.items():
            found = shares(r.profile_layers(x, args.profile_runs))
            if k not in profiles or found["kernel_ms"] < profiles[k]["kernel_ms"]:
                profiles[k] = found
    first = next(iter(rows))
    result = {
        "model": args.model,
        "load_average_at_start": cpu["load_average"],
        "bf16_matmul_peak_gflops": peak,
        "gflop_per_image": gflop,
        "files": files,
        "ms": ms,
        "speedup_vs_first": {b: {k: d[first] / v for k, v in d.items()} for b, d in ms.items()},
        "percent_of_bf16_peak": {
            b: {k: 100 * gflop * b / (v / 1e3) / peak for k, v in d.items()} for b, d in ms.items()
        },
        "profile_batch8": profiles,
    }
    for r in rows.values():
        r.close()
    write_json(args.out, result)
    print(
        f"{args.model} on {cpu['model']} {cpu['flags']}, load {cpu['load_average']}; bf16 peak {peak:.0f} GFLOP/s"
    )
    for b, d in ms.items():
        for k, v in d.items():
            print(
                f"batch {b} {k:<16} {v:8.1f} ms  x{result['speedup_vs_first'][b][k]:.2f} vs {first}  "
                f"{result['percent_of_bf16_peak'][b][k]:5.1f}% of bf16 peak"
            )
    for k, prof in profiles.items():
        print(
            f"profile b8 {k}: kernel {prof['kernel_ms']} ms, memory-bound {prof['memory_bound_share']:.0%}: {prof['top']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
