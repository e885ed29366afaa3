"""What the benchmark scripts share: the photo split they calibrate and judge on, each row's parity
with eager FP32 on the held-out inputs, interleaved timing, and the JSON writer that puts the CPU in
every record. The scripts import it as a sibling module (``python benchmarks/NAME.py`` puts this folder
on ``sys.path``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FULL = ["s2mlpv2_small", "msmlp_tiny", "msmlp_small", "s2mlpv2_medium", "msmlp_base"]  # the paper models
BATCHES = (8, 1)
CALIB_IMAGES = ("brick", "grass", "rocket")  # the rest (astronaut, coffee) are held out
CPU_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_record() -> dict[str, Any]:
    """The CPU these figures come from: its model name, the flags BF16/INT8 speed depends on, the cores
    and the load average at the start (the machines differ: Xeon with AMX, or EPYC without)."""
    import os

    from msmlp.runtime.openvino import cpu_flags

    name = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    flags = cpu_flags()
    return {
        "model": name,
        "flags": [f for f in CPU_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }


def calib_and_held(config: Any, calib_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed calibration inputs (``calib_size`` views of three packaged photos) and held-out
    inputs (16 views of the other two), N,C,H,W."""
    from msmlp.data.transforms import augmented, builtin_images, load_image, preprocess

    files = builtin_images()
    calib = [load_image(f) for f in files if f.stem in CALIB_IMAGES]
    held = [load_image(f) for f in files if f.stem not in CALIB_IMAGES]
    return (
        preprocess(augmented(calib, calib_size, seed=1), config),
        preprocess(augmented(held, 16, seed=2), config),
    )


def held_out_parity(model: Any, rows: dict[str, Any], held: np.ndarray) -> dict[str, Any]:
    """Each row's :class:`msmlp.verify.ParityStats` against eager FP32 on ``held`` (batches of 8)."""
    from msmlp.runtime.base import run_in_batches
    from msmlp.runtime.torch_backend import TorchBackend
    from msmlp.verify import compare

    with TorchBackend(model) as ref:
        expected = run_in_batches(ref, held, 8)
    return {label: compare(expected, run_in_batches(backend, held, 8)) for label, backend in rows.items()}


def timings(rows: dict[str, Any], rounds: int) -> dict[int, dict[str, float]]:
    """Median milliseconds per row for each of ``BATCHES``: one warm-up call per row, then ``rounds``
    interleaved rounds (batch 1: twice as many), see :func:`msmlp.bench.timing.interleaved_samples`."""
    from msmlp.bench.timing import interleaved_samples

    found = {}
    for batch in BATCHES:
        first = next(iter(rows.values()))
        x = np.random.default_rng(0).standard_normal((batch, *first.input_shape[1:]), dtype=np.float32)
        for row in rows.values():
            row(x)
        samples = interleaved_samples(rows, x, rounds if batch > 1 else rounds * 2)
        found[batch] = {name: float(np.median(s) * 1e3) for name, s in samples.items()}
    return found


def write_json(path: Path, results: Any) -> None:
    """Write a benchmark's results with the CPU they were measured on (model, BF16/AMX/VNNI flags,
    ``MSMLP_CPU_MASK`` where set) under ``cpu``; a list of results goes under ``results``."""
    from msmlp.hostcpu import host_cpu

    cpu = host_cpu().record()
    record = {"cpu": cpu, **results} if isinstance(results, dict) else {"cpu": cpu, "results": results}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
