"""``msmlp bench --compare``: every installed backend x precision on the same real-image batch, in one
interleaved run (after Ultralytics' benchmark mode), so the rows share whatever else the machine is doing.

Rows come from the backend table (each spec's ``compare_rows``): the first backend's first row, eager
PyTorch FP32, is the baseline and the reference; then every installed backend's rows for the FP32 and
INT8 (ModelOpt Q/DQ) graphs and any TensorRT plans. Each row
has p50/p99 latency, throughput, speed-up over eager, achieved GFLOP/s next to a BF16 and an FP32 matmul
peak measured with torch in the same run, and cosine / top-1 agreement with eager FP32 on that batch, so
a fast wrong path cannot win: ``fastest`` names the fastest row within its precision's tolerance.
With ``--data`` each row also gets its top-1/top-5 on a labelled set (:mod:`msmlp.bench.accuracy`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.bench.options import BenchOptions
from msmlp.bench.prepare import export_temp_onnx, torch_threads
from msmlp.bench.timing import check_batches, interleaved_samples, matmul_peak, summarize
from msmlp.errors import InputError
from msmlp.log import logger
from msmlp.runtime.base import Backend
from msmlp.runtime.registry import Sources, backend_specs

PEAK_N = 2048
CALIB_SIZE = 16  # --compare --model --int8: a bounded calibration (the export pipeline uses more)


def run_compare(opts: BenchOptions) -> dict[str, Any]:
    """The ``compare`` section of the report (plus target), from one interleaved run."""
    from msmlp.models.complexity import complexity

    with tempfile.TemporaryDirectory(prefix="msmlp-compare-") as tmp, torch_threads(opts.threads):
        module, files, target = _sources(opts, Path(tmp))
        config = module.deploy_config
        rows, skipped = _rows(module, files, opts)
        gflop = 2 * complexity(module, config.input_size).macs / 1e9
        peaks = {
            "bf16": matmul_peak("bf16", n=PEAK_N, seconds=0.5),
            "fp32": matmul_peak("fp32", n=PEAK_N, seconds=0.5),
        }
        found: list[dict[str, Any]] = []
        accuracy = None
        try:
            for _, backend in rows:
                backend.load()
                check_batches(backend, opts.batches)
            for batch in opts.batches:
                found += _compare_batch(rows, real_batch(config, batch, opts.seed), opts)
            if opts.data is not None:
                accuracy = _accuracy(rows, config, opts, found)
        finally:
            for _, backend in rows:
                backend.close()
        for dtype in peaks:  # measured again after the rows: keep the better of the two
            peaks[dtype] = max(peaks[dtype], matmul_peak(dtype, n=PEAK_N, seconds=0.5))
    _derive(found, gflop, peaks)
    passing = [r for r in found if r["passed"] and r["batch"] == max(opts.batches)]
    compare = {
        "model": target["model"],
        "gflop_per_image": gflop,
        "peaks_gflops": peaks,
        "peak_n": PEAK_N,
        "rounds": opts.iters,
        "warmup": opts.warmup,
        "images": f"packaged photos + augmented views (random resized crops, flips), seed {opts.seed}",
        "rows": found,
        "fastest": max(passing, key=lambda r: r["throughput_ips"])["label"] if passing else None,
        "skipped": skipped,
        "accuracy": accuracy,
    }
    return {
        "target": target,
        "backend": None,
        "results": [],
        "profile": None,
        "concurrency": None,
        "compare": compare,
    }


def _accuracy(
    rows: list[tuple[str, Backend]], config: Any, opts: BenchOptions, found: list[dict[str, Any]]
) -> dict[str, Any]:
    """--data: score every row on the labelled set (:mod:`msmlp.bench.accuracy`) and add the columns to
    each of its timing rows; returns what the set was."""
    from msmlp.bench.accuracy import open_data, score_rows

    data = open_data(Path(opts.data))  # type: ignore[arg-type]  # only called with --data
    columns, about = score_rows(rows, config, data, max(opts.batches))
    for r in found:
        r.update(columns[r["label"]])
    return about


def real_batch(config: Any, batch: int, seed: int = 0) -> np.ndarray:
    """``batch`` preprocessed inputs: the packaged photos, then augmented views of them."""
    from msmlp.data.transforms import augmented, builtin_images, load_image, preprocess

    pictures = [load_image(p) for p in builtin_images()]
    return preprocess(augmented(pictures, batch, seed=seed), config)


def _compare_batch(
    rows: list[tuple[str, Backend]], x: np.ndarray, opts: BenchOptions
) -> list[dict[str, Any]]:
    """Warm up every row (the first call's logits are kept for parity), then ``iters`` rounds calling each
    row once in a rotated order."""
    from msmlp.verify import compare, tolerance_for

    logits = {}
    for label, backend in rows:
        logits[label] = backend(x)
        for _ in range(max(0, opts.warmup - 1)):
            backend(x)
    assert opts.iters is not None
    samples = interleaved_samples(dict(rows), x, opts.iters)
    reference = logits[rows[0][0]]
    found = []
    for label, backend in rows:
        stats = summarize(samples[label], len(x))
        parity = compare(reference, logits[label])
        failures = tolerance_for(backend.info.precision).failures(parity)  # the verification gate itself
        found.append(
            {
                "label": label,
                "backend": backend.info.backend,
                "precision": backend.info.precision,
                "batch": len(x),
                "iters": stats.iters,
                "p50_ms": stats.p50_ms,
                "p99_ms": stats.p99_ms,
                "mean_ms": stats.mean_ms,
                "throughput_ips": len(x) / (stats.p50_ms / 1e3),
                "cosine": parity.cosine,
                "top1": parity.top1,
                "top1_decisive": parity.top1_decisive,
                "near_ties": parity.near_ties,
                "passed": not failures,
                "failures": failures,
                "details": {k: v for k, v in backend.info.details.items() if k != "cache_dir"},
            }
        )
    return found


def _derive(rows: list[dict[str, Any]], gflop: float, peaks: dict[str, float]) -> None:
    reference = rows[0]["label"]  # the first row is the reference (eager PyTorch FP32)
    eager = {r["batch"]: r["p50_ms"] for r in rows if r["label"] == reference}
    for r in rows:
        r["speedup_vs_eager"] = eager[r["batch"]] / r["p50_ms"]
        r["gflops"] = gflop * r["batch"] / (r["p50_ms"] / 1e3)
        r["percent_of_bf16_peak"] = 100 * r["gflops"] / peaks["bf16"]


def _sources(opts: BenchOptions, tmp: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The PyTorch reference module and the graphs to compare: exported from ``--model`` into ``tmp``, or
    read from an export folder (whose model.json says which weights rebuild the reference)."""
    from msmlp.models.weights import load_for_deploy

    if opts.model is not None:
        fp32 = export_temp_onnx(opts.model, opts.weights, opts.seed, tmp, max(opts.batches))
        module = load_for_deploy(opts.model, opts.weights, opts.seed, quiet=True)
        int8 = _export_int8(fp32, tmp, module.deploy_config, opts.seed) if opts.int8 else None
        target = {"kind": "model", "model": opts.model, "onnx": "temporary export", "int8": bool(int8)}
        return module, {"fp32": fp32, "int8": int8, "plans": []}, target
    from msmlp.artifacts import ONNX_FILES, read_artifact

    folder = Path(opts.onnx_dir)  # type: ignore[arg-type]
    fp32 = folder / ONNX_FILES["fp32"]
    if not fp32.is_file():
        raise InputError(
            f"--onnx-dir {str(folder)!r} holds no {ONNX_FILES['fp32']}; pass an msmlp-export output folder"
        )
    info = read_artifact(fp32)
    if not info.model:
        raise InputError(
            f"{fp32} does not say which model it was exported from; re-export it with msmlp-export"
        )
    weights = opts.weights or (
        info.weights.get("path") if info.weights.get("source") == "checkpoint" else None
    )
    seed = (
        int(info.weights.get("seed", opts.seed)) if info.weights.get("source") == "synthetic" else opts.seed
    )
    module = load_for_deploy(info.model, weights, seed, quiet=True, config=info.config)
    int8 = folder / ONNX_FILES["int8"]
    plans = sorted(p for p in folder.iterdir() if p.suffix in (".plan", ".engine"))
    target = {"kind": "onnx_dir", "path": str(folder), "model": info.model}
    return module, {"fp32": fp32, "int8": int8 if int8.is_file() else None, "plans": plans}, target


def _export_int8(fp32: Path, tmp: Path, config: Any, seed: int) -> Path:
    from msmlp.exporters.quantize import quantize_int8

    calib = real_batch(config, CALIB_SIZE, seed + 1)  # other views than the compared batch
    logger.info("quantizing the temporary graph to INT8 (%d calibration inputs)", CALIB_SIZE)
    out = tmp / "model.int8.onnx"
    quantize_int8(fp32, out, calib)
    return out


def _rows(
    module: Any, files: dict[str, Any], opts: BenchOptions
) -> tuple[list[tuple[str, Backend]], dict[str, str]]:
    """Every installed backend's rows for the graphs at hand; the rest in ``skipped`` with the reason."""
    skipped: dict[str, str] = {}
    graphs = [("fp32", files["fp32"]), *([("int8", files["int8"])] if files["int8"] else [])]
    if not files["int8"]:
        skipped["int8 rows"] = (
            "no INT8 graph (pass --int8 with --model, or export one with msmlp-export --int8)"
        )
    sources = Sources(
        module, tuple(graphs), tuple(files["plans"]), threads=opts.threads, torch_compile=opts.torch_compile
    )
    rows: list[tuple[str, Backend]] = []
    for spec in backend_specs():
        if spec.compare_rows is None:
            continue
        why = spec.unavailable()
        if why is not None:
            skipped[spec.name] = why
            continue
        rows += spec.compare_rows(sources, skipped)
    return rows, skipped
