"""ONNX Runtime CPU latency against eager PyTorch CPU, per model and batch size, measured in one run.

Each model gets synthetic weights in which every block contributes, is exported with msmlp's own
export (the graph users deploy), and both backends run the same input. Runs are interleaved
(eager, ORT, eager, ORT, ...) so that load from other processes hits both alike; the table gives the
median latency of each and the speed-up (eager median / ORT median). The outputs are compared first,
so a fast wrong graph cannot pass.

    python benchmarks/ort_vs_torch.py                       # the five full-size models, batch 1 and 8
    python benchmarks/ort_vs_torch.py --models s2mlpv2_small --batch-sizes 1 --repeats 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import write_json

FULL_MODELS = ["msmlp_tiny", "msmlp_small", "msmlp_base", "s2mlpv2_small", "s2mlpv2_medium"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(FULL_MODELS), help="comma-separated model names")
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per backend (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per backend first (default 2)")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="threads for both (default: all cores)"
    )
    p.add_argument(
        "--optimization", default="all", help="ONNX Runtime graph optimisation level (default all)"
    )
    p.add_argument(
        "--spin",
        action="store_true",
        help="let idle threads of both busy-wait (ORT allow_spinning, OMP_WAIT_POLICY=ACTIVE); default: both "
        "sleep, which is far faster for both on a machine shared with other processes",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p.parse_args(argv)


def timed(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def bench_model(name: str, batch_sizes: list[int], args: argparse.Namespace, folder: Path) -> list[dict]:
    import torch

    import msmlp
    from msmlp.exporters.onnx import export_onnx
    from msmlp.models.weights import load_for_deploy
    from msmlp.runtime.ort import OnnxRuntimeBackend
    from msmlp.verify import compare

    config = msmlp.get_config(name)
    model = load_for_deploy(name, quiet=True)
    start = time.perf_counter()
    path = export_onnx(model, folder / f"{name}.onnx", config=config)
    export_s = time.perf_counter() - start
    ort_backend = OnnxRuntimeBackend(
        path, threads=args.threads, optimization=args.optimization, spin=args.spin
    ).load()

    def eager(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    rows = []
    for batch in batch_sizes:
        x = np.random.default_rng(0).standard_normal((batch, *config.input_size), dtype=np.float32)
        stats = compare(eager(x), ort_backend(x))
        if stats.max_rel > 1e-4:
            raise SystemExit(f"{name} batch {batch}: ONNX Runtime output differs from PyTorch ({stats})")
        for _ in range(args.warmup):
            eager(x)
            ort_backend(x)
        eager_s, ort_s = [], []
        for _ in range(args.repeats):
            eager_s.append(timed(eager, x))
            ort_s.append(timed(ort_backend, x))
        e, o = statistics.median(eager_s), statistics.median(ort_s)
        rows.append(
            {
                "model": name,
                "batch": batch,
                "eager_ms": round(e * 1e3, 1),
                "ort_ms": round(o * 1e3, 1),
                "speedup": round(e / o, 2),
                "eager_spread_ms": [round(min(eager_s) * 1e3, 1), round(max(eager_s) * 1e3, 1)],
                "ort_spread_ms": [round(min(ort_s) * 1e3, 1), round(max(ort_s) * 1e3, 1)],
                "max_rel_error": stats.max_rel,
                "export_s": round(export_s, 1),
            }
        )
        print(
            f"{name:<16} {batch:>5} {e * 1e3:>10.1f} {o * 1e3:>10.1f} {e / o:>8.2f}x"
            f"   eager {min(eager_s) * 1e3:.0f}-{max(eager_s) * 1e3:.0f}, ort {min(ort_s) * 1e3:.0f}-{max(ort_s) * 1e3:.0f}",
            flush=True,
        )
    ort_backend.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["OMP_WAIT_POLICY"] = "ACTIVE" if args.spin else "PASSIVE"  # read when torch loads OpenMP
    import torch

    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(
        f"ONNX Runtime CPU vs eager PyTorch CPU: {args.threads} thread(s) each, median of {args.repeats} "
        f"interleaved runs after {args.warmup} warm-up, idle threads {'spin' if args.spin else 'sleep'}; "
        f"torch {torch.__version__}, "
        f"onnxruntime {__import__('onnxruntime').__version__}, {os.cpu_count()} CPU(s)"
    )
    print(f"{'model':<16} {'batch':>5} {'eager ms':>10} {'ort ms':>10} {'speed-up':>9}   (min-max ms)")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="msmlp-bench-") as tmp:
        for name in models:
            rows.extend(bench_model(name, batch_sizes, args, Path(tmp)))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
