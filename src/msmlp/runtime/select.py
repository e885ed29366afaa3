"""``--backend auto`` for an ONNX graph: the fastest installed CPU backend and precision that passed
verification for that very file.

The order was measured (benchmarks/cpu_backends.py, one interleaved run, 2 shared AVX-512-BF16 cores,
s2mlpv2_small, batch 8): OpenVINO with the bf16 hint 1.37x faster than ONNX Runtime FP32 with OpenVINO's
threads pinned on a loaded machine and 1.95x with them unpinned (the backend's default now), 3.6x on a
quiet one (REFERENCE.md); OpenVINO FP32 was 0.73x of ONNX Runtime FP32 when loaded and level with it
when quiet, so ONNX Runtime is the FP32 runtime; on the INT8 Q/DQ graph OpenVINO (bf16 remainder) was
1.4x faster than ONNX Runtime when quiet, 0.8x when loaded and pinned. A candidate is taken only if
``model.json`` records a passed verification for it (key, file and backend); a graph without one runs
at its own precision, never lower, and the log says it is unverified.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msmlp.artifacts import ArtifactInfo, read_artifact, read_verifications
from msmlp.errors import InputError
from msmlp.log import logger
from msmlp.runtime.base import Backend


@dataclass(frozen=True)
class Candidate:
    """One way to run a graph: backend, inference-precision hint, and the verification key it needs."""

    backend: str  # "openvino" | "onnxruntime"
    hint: str | None  # OpenVINO inference precision ("bf16"/"f32"); None for ONNX Runtime
    key: str  # the model.json "verification" key that must have passed
    precision: str  # the precision it computes in, as BackendInfo.precision reports it

    @property
    def label(self) -> str:
        hint = f" ({self.hint} hint)" if self.backend == "openvino" and self.precision == "int8" else ""
        return f"{self.backend} {self.precision}{hint}"


# Fastest first, per graph precision (measured; see the module docstring).
ORDER: dict[str, tuple[Candidate, ...]] = {
    "fp32": (
        Candidate("openvino", "bf16", "bf16", "bf16"),
        Candidate("onnxruntime", None, "fp32", "fp32"),
        Candidate("openvino", "f32", "fp32_openvino", "fp32"),
    ),
    "int8": (
        Candidate("openvino", "bf16", "int8_openvino", "int8"),
        Candidate("openvino", "f32", "int8_openvino", "int8"),
        Candidate("onnxruntime", None, "int8", "int8"),
    ),
    "fp16": (Candidate("onnxruntime", None, "fp16", "fp16"),),
}
# Unverified graphs: the fastest way that computes at the graph's own precision (no bf16 for fp32, no
# bf16 remainder for an int8 graph).
UNVERIFIED: dict[str, tuple[Candidate, ...]] = {
    "fp32": (ORDER["fp32"][1], ORDER["fp32"][2]),  # ONNX Runtime, then OpenVINO f32
    "int8": (ORDER["int8"][1], ORDER["int8"][2]),
    "fp16": ORDER["fp16"],
}


def select_backend(path: Path, *, threads: int | None = None, precision: str | None = None) -> Backend:
    """The unloaded backend ``auto`` picks for ``path``; one INFO line says which and why.

    ``precision="bf16"`` is the user's explicit request: OpenVINO with the bf16 hint, verified or not.
    """
    info = read_artifact(path)
    available, missing = _usable()
    if precision == "bf16":
        if "bf16" not in available:
            raise InputError(f"--precision bf16 needs OpenVINO on a BF16-capable CPU, but {missing['bf16']}")
        chosen = Candidate("openvino", "bf16", "bf16", "bf16" if info.precision != "int8" else "int8")
        passed = recorded_verifications(info)
        status = "verified" if _passed(passed, chosen, info) else "NOT verified for this file"
        logger.info(
            "backend auto: %s for %s (asked for with --precision bf16; %s)", chosen.label, path.name, status
        )
        return _open(chosen, path, info, threads)
    if precision not in (None, "f32", "fp32"):
        raise InputError(f"--precision {precision!r} is not one of f32, bf16")
    chosen, reason = choose(info, available, missing)
    logger.info("backend auto: %s for %s (%s)", chosen.label, path.name, reason)
    return _open(chosen, path, info, threads)


def choose(
    info: ArtifactInfo,
    available: set[str],
    missing: Mapping[str, str],
    *,
    recorded: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Candidate, str]:
    """The first usable candidate for the graph and a one-clause reason (what was verified or skipped).

    ``recorded``: the verifications to go by (default: what model.json records for the file)."""
    order = ORDER.get(info.precision)
    if order is None:
        raise InputError(f"{info.path.name} has precision {info.precision!r}; auto knows fp32, fp16, int8")
    passed = recorded_verifications(info) if recorded is None else recorded
    skipped = []
    if passed:
        for cand in order:
            if not _passed(passed, cand, info):
                skipped.append(f"{cand.label} not verified")
            elif _need(cand) not in available:
                skipped.append(f"{cand.label}: {missing[_need(cand)]}")
            else:
                summary = passed[cand.key]
                cosine = f", cosine {summary['cosine']:.6f}" if "cosine" in summary else ""
                why = f"fastest verified: {cand.key} passed on {summary.get('backend', cand.backend)}{cosine}"
                return cand, "; ".join([why, *skipped])
    for cand in UNVERIFIED.get(info.precision, order):
        if _need(cand) in available:
            what = "no passed verification recorded in model.json" if passed else "no model.json lists it"
            return cand, f"unverified file ({what}): fastest at its own precision {info.precision}"
    raise InputError(
        f"no installed backend can run {info.path.name}; pip install onnxruntime-gpu or openvino"
    )


def recorded_verifications(info: ArtifactInfo) -> dict[str, Mapping[str, Any]]:
    """Verification summaries that ``model.json`` records for this very file (see
    :func:`msmlp.artifacts.read_verifications`)."""
    return read_verifications(info)


def _passed(passed: Mapping[str, Mapping[str, Any]], cand: Candidate, info: ArtifactInfo) -> bool:
    summary = passed.get(cand.key)
    if not summary or summary.get("passed") is not True:
        return False
    if summary.get("backend", "onnxruntime") != cand.backend:
        return False
    if cand.hint != "bf16" or cand.key == "bf16":
        return True  # f32 computes at least as precisely as whatever hint the verification ran with
    return summary.get("hint") == "bf16"  # an OpenVINO verification records the hint it ran with


def _need(cand: Candidate) -> str:
    return "bf16" if cand.hint == "bf16" else cand.backend


def _usable() -> tuple[set[str], dict[str, str]]:
    """Installed backends (``onnxruntime``, ``openvino``, and ``bf16`` when the CPU has it), and why not."""
    available: set[str] = set()
    missing: dict[str, str] = {}
    for module, name in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        if importlib.util.find_spec(module) is not None:
            available.add(name)
        else:
            missing[name] = f"{name} is not installed"
    if "openvino" in available:
        from msmlp.runtime.openvino import bf16_support

        ok, why = bf16_support()
        if ok:
            available.add("bf16")
        else:
            missing["bf16"] = why
    else:
        missing["bf16"] = "openvino is not installed (pip install openvino)"
    return available, missing


def _open(cand: Candidate, path: Path, info: ArtifactInfo, threads: int | None) -> Backend:
    if cand.backend == "openvino":
        from msmlp.runtime.openvino import OpenVINOBackend

        return OpenVINOBackend(path, inference_precision=cand.hint, threads=threads, artifact=info)
    from msmlp.runtime.ort import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, threads=threads, artifact=info)
