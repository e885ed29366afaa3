"""ONNX Runtime CPU latency of the FP32, FP16 and INT8 graphs of a model, side by side, with parity.

For each model: export FP32 (``make_contributing`` weights, seed 0, so every block matters), convert to
FP16 (ModelOpt AutoCast) and INT8 (ModelOpt PTQ, calibrated on the first ceil(n/2) sorted built-in
photos stretched by random crops/flips), then

- parity: cosine (worst and mean), top-1 and top-5 agreement and max abs error of each graph on ONNX
  Runtime CPU against PyTorch FP32, on views of the held-out photos (never the calibration ones);
- latency: seconds per call of each graph at each batch size, the three graphs timed in turns (round
  robin) within the same run so machine noise hits them alike; ratios are FP32 time / time, given for
  the median and for the minimum (on a shared machine the minimum is the steadier estimate of a graph's
  own cost, the median includes other processes' interference).

Usage::

    python benchmarks/precision.py --models s2mlpv2_small --batch 1 8 --repeat 10
    python benchmarks/precision.py --models msmlp_micro --batch 1 8 --repeat 5 --work /tmp/p

Results print as a table and go to ``--json`` (default ``<work>/precision.json``). Graphs are kept in
``--work`` and reused by the next run with ``--reuse``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import write_json

PRECISIONS = ("fp32", "fp16", "int8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results = {"machine": machine(), "args": settings, "models": {}}
    for name in args.models:
        graphs, build = build_graphs(name, args.work / name, args.calib_size, args.method, args.reuse)
        entry = {"build": build, "latency": {}}
        if not args.no_parity:
            entry["parity"] = parity(name, graphs, args.views)
        for batch in args.batch:
            entry["latency"][str(batch)] = latency(graphs, name, batch, args.repeat, args.threads)
        results["models"][name] = entry
        print_model(name, entry)
    out = args.json or args.work / "precision.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, results)
    print(f"\nwrote {out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["s2mlpv2_small"])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeat", type=int, default=10, help="timed calls per graph and batch size")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--method", default="max", choices=("max", "entropy"))
    p.add_argument("--views", type=int, default=32, help="held-out image views for parity")
    p.add_argument("--work", type=Path, default=Path("out/bench-precision"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--reuse", action="store_true", help="reuse graphs already in --work")
    p.add_argument("--no-parity", action="store_true")
    return p.parse_args(argv)


def build_graphs(name: str, work: Path, calib_size: int, method: str, reuse: bool) -> tuple[dict, dict]:
    """FP32, FP16 and INT8 graphs of ``name`` in ``work``; returns their paths and build figures."""
    import msmlp
    from msmlp.data.transforms import builtin_images
    from msmlp.exporters.calibration import calibration_batch, split_calibration
    from msmlp.exporters.onnx import export_onnx
    from msmlp.exporters.precision import convert_fp16
    from msmlp.exporters.quantize import quantize_int8
    from msmlp.models.weights import load_for_deploy

    config = msmlp.get_config(name)
    graphs = {p: work / f"model.{p}.onnx" for p in PRECISIONS}
    build: dict = {}
    if reuse and all(g.is_file() for g in graphs.values()):
        return graphs, json.loads((work / "build.json").read_text())
    start = time.perf_counter()
    model = load_for_deploy(name, quiet=True)
    export_onnx(model, graphs["fp32"], config=config, model_name=name)
    build["fp32"] = {"seconds": round(time.perf_counter() - start, 1), "bytes": graphs["fp32"].stat().st_size}
    build["fp16"] = convert_fp16(graphs["fp32"], graphs["fp16"])
    calib_files, _ = split_calibration(builtin_images())
    calib = calibration_batch(config, calib_files, calib_size, cache=work / "calib.npy")
    build["int8"] = quantize_int8(graphs["fp32"], graphs["int8"], calib, method=method)
    build["calibration"] = {"files": [f.name for f in calib_files], "size": calib_size}
    (work / "build.json").write_text(json.dumps(build, indent=2))
    return graphs, build


def parity(name: str, graphs: dict, views: int) -> dict:
    """Each graph on ONNX Runtime CPU against PyTorch FP32 on views of the held-out photos."""
    import torch

    import msmlp
    from msmlp.data.transforms import augmented, builtin_images, load_image, preprocess
    from msmlp.exporters.calibration import split_calibration
    from msmlp.models.weights import load_for_deploy
    from msmlp.runtime.ort import OnnxRuntimeBackend
    from msmlp.verify import compare

    config = msmlp.get_config(name)
    _, held_out = split_calibration(builtin_images())
    x = preprocess(augmented([load_image(f) for f in held_out], views, seed=1), config)
    model = load_for_deploy(name, quiet=True)
    with torch.inference_mode():
        ref = np.concatenate([model(torch.from_numpy(x[i : i + 8])).numpy() for i in range(0, len(x), 8)])
    out = {"images": [f.name for f in held_out], "views": views}
    for precision, path in graphs.items():
        with OnnxRuntimeBackend(path) as backend:
            logits = np.concatenate([backend(x[i : i + 8]) for i in range(0, len(x), 8)])
        out[precision] = compare(ref, logits).to_dict()
    return out


def latency(graphs: dict, name: str, batch: int, repeat: int, threads: int | None) -> dict:
    """Median seconds per call of each graph, timed in turns so that noise is shared."""
    from dataclasses import replace

    import msmlp
    from msmlp.artifacts import read_artifact
    from msmlp.runtime.ort import OnnxRuntimeBackend

    config = msmlp.get_config(name)
    x = np.random.default_rng(0).standard_normal((batch, *config.input_size)).astype(np.float32)
    # the converted graphs carry the export's batch profile; this benchmark times any batch size
    unbounded = {p: replace(read_artifact(g), batch=None) for p, g in graphs.items()}
    backends = {
        p: OnnxRuntimeBackend(g, threads=threads, artifact=unbounded[p]).load() for p, g in graphs.items()
    }
    try:
        for b in backends.values():
            b(x)  # warm-up: first-run allocations and kernel selection
        times: dict[str, list[float]] = {p: [] for p in backends}
        for _ in range(repeat):
            for p, b in backends.items():
                start = time.perf_counter()
                b(x)
                times[p].append(time.perf_counter() - start)
    finally:
        for b in backends.values():
            b.close()
    medians = {p: float(np.median(t)) for p, t in times.items()}
    minima = {p: float(np.min(t)) for p, t in times.items()}
    return {
        "median_s": medians,
        "min_s": minima,
        "speedup_vs_fp32": {p: medians["fp32"] / m for p, m in medians.items()},
        "speedup_vs_fp32_min": {p: minima["fp32"] / m for p, m in minima.items()},
        "repeat": repeat,
    }


def print_model(name: str, entry: dict) -> None:
    print(f"\n{name}")
    if "parity" in entry:
        print(f"  parity vs PyTorch FP32 ({entry['parity']['views']} held-out views):")
        for p in PRECISIONS:
            s = entry["parity"][p]
            print(
                f"    {p:<5} cosine min {s['cosine']:.6f} mean {s['cosine_mean']:.6f}  "
                f"top-1 {s['top1']:.1%}  top-5 {s['top5']:.1%}  max abs {s['max_abs']:.3g}"
            )
    print("  ONNX Runtime CPU latency per call, median / min (speed-up = FP32 time / time):")
    for batch, lat in entry["latency"].items():
        cells = "  ".join(
            f"{p} {lat['median_s'][p] * 1e3:.0f}/{lat['min_s'][p] * 1e3:.0f} ms "
            f"({lat['speedup_vs_fp32'][p]:.2f}x/{lat['speedup_vs_fp32_min'][p]:.2f}x)"
            for p in PRECISIONS
        )
        print(f"    batch {batch:>3}: {cells}")


def machine() -> dict:
    import onnxruntime

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "onnxruntime": onnxruntime.__version__,
        "load_average": os.getloadavg(),
    }


if __name__ == "__main__":
    sys.exit(main())
