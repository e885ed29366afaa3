"""Overhead of the dynamic batcher against calling the backend directly with the same batches.

One ONNX Runtime CPU backend (the model exported with msmlp's own export, synthetic contributing
weights). Each round does, back to back on the same backend:

  direct:   backend(x)                          x = one N-image batch (N = --batch, default 8)
  batcher:  N single-image submit() calls, then wait for all N results

The batcher must merge the N requests into exactly one backend call of N images (checked, as is
that its outputs equal the direct call's); what it adds is queueing, the thread hand-off, one
np.concatenate and the per-request split. Rounds interleave direct and batcher so that load from
other processes hits both alike; the overhead is (median batcher - median direct) / median direct.
Because backend time varies far more than the batcher's cost on a shared CPU, the "mechanism" line
also subtracts, per round, the backend's own timed call (Backend.last_infer_s) from each side.

    python benchmarks/batcher_overhead.py                       # s2mlpv2_small, batch 8
    python benchmarks/batcher_overhead.py --model s2mlpv2_micro --rounds 200
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="s2mlpv2_small", help="registered model (default s2mlpv2_small)")
    p.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--rounds", type=int, default=12, help="timed rounds of each (default 12)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="batcher window (default 2 ms)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p.parse_args(argv)


def build_backend(name: str, folder: Path, threads: int):
    import msmlp
    from msmlp.exporters.onnx import export_onnx
    from msmlp.models.weights import load_for_deploy
    from msmlp.runtime.ort import OnnxRuntimeBackend

    model = load_for_deploy(name, quiet=True)
    path = export_onnx(model, folder / f"{name}.onnx", config=msmlp.get_config(name))
    return OnnxRuntimeBackend(path, threads=threads).load()


def images(backend, count: int) -> np.ndarray:
    """Real photos (the built-in samples, cropped/flipped to ``count``) at the model's input size."""
    from msmlp.data.transforms import augmented, builtin_images, load_image, preprocess
    from msmlp.models.registry import DeployConfig

    config = DeployConfig(input_size=tuple(backend.input_shape[1:]))
    photos = augmented([load_image(p) for p in builtin_images()], count, seed=0)
    return preprocess(photos, config)


def run(args: argparse.Namespace) -> dict:
    from msmlp.runtime.batcher import BatchCounter, DynamicBatcher

    with tempfile.TemporaryDirectory(prefix="msmlp-batcher-bench-") as tmp:
        backend = build_backend(args.model, Path(tmp), args.threads)
        x = images(backend, args.batch)
        counter = BatchCounter()
        batcher = DynamicBatcher(
            backend, max_batch=args.batch, max_delay_ms=args.max_delay_ms, observers=[counter]
        )
        direct_s: list[float] = []
        batched_s: list[float] = []
        added_s: list[float] = []  # batcher round minus the backend's own time for that call
        with batcher:
            for i in range(args.warmup + args.rounds):
                start = time.perf_counter()
                want = backend(x)
                direct = time.perf_counter() - start
                direct_own = backend.last_infer_s
                start = time.perf_counter()
                futures = [batcher.submit(image) for image in x]
                got = np.stack([f.result(600) for f in futures])
                batched = time.perf_counter() - start
                batched_own = backend.last_infer_s
                if not np.array_equal(got, want):
                    sys.exit(
                        f"batcher outputs differ from the direct call (max |diff| {np.abs(got - want).max()})"
                    )
                if i >= args.warmup:
                    direct_s.append(direct)
                    batched_s.append(batched)
                    added_s.append((batched - batched_own) - (direct - direct_own))
        backend.close()
    if counter.sizes != {args.batch: args.warmup + args.rounds}:
        sys.exit(f"the batcher did not form one batch of {args.batch} per round: {counter.sizes}")
    d, b = statistics.median(direct_s), statistics.median(batched_s)
    paired = [bb - dd for bb, dd in zip(batched_s, direct_s)]
    return {
        "model": args.model,
        "backend": "onnxruntime CPU",
        "threads": args.threads,
        "batch": args.batch,
        "rounds": args.rounds,
        "max_delay_ms": args.max_delay_ms,
        "direct_median_ms": d * 1e3,
        "batcher_median_ms": b * 1e3,
        "direct_stdev_ms": statistics.stdev(direct_s) * 1e3 if len(direct_s) > 1 else 0.0,
        "overhead_ms_median_paired": statistics.median(paired) * 1e3,
        "overhead_percent": 100.0 * (b - d) / d,
        "mechanism_ms_median": statistics.median(added_s) * 1e3,
        "mechanism_percent": 100.0 * statistics.median(added_s) / d,
        "batches_formed": counter.sizes,
        "outputs_identical": True,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(
        f"{result['model']} on {result['backend']} ({result['threads']} threads), batch {result['batch']}, "
        f"{result['rounds']} interleaved rounds:\n"
        f"  direct backend call   median {result['direct_median_ms']:9.2f} ms "
        f"(stdev {result['direct_stdev_ms']:.2f} ms)\n"
        f"  batcher, {result['batch']} requests  median {result['batcher_median_ms']:9.2f} ms\n"
        f"  overhead              {result['overhead_percent']:+.2f} % of the direct call "
        f"(paired median {result['overhead_ms_median_paired']:+.3f} ms per batch)\n"
        f"  batcher mechanism     {result['mechanism_ms_median']:+.3f} ms per batch = "
        f"{result['mechanism_percent']:+.3f} % (each round's time minus the backend's own time, against "
        "the same for the direct call: free of backend noise)\n"
        f"  every round formed one batch of {result['batch']}; outputs identical to the direct call"
    )
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
