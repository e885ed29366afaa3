"""``--backend auto`` for an ONNX graph: the fastest installed backend and precision that passed
verification for that very file.

The candidates and their speed ranks come from the backend table (each spec's ``candidates``; the
ranks were measured: see docs/performance.md). A candidate is taken only if ``model.json`` records a
passed verification for it (key, file and backend); a graph without one runs at its own precision,
never lower, and the log says it is unverified.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from msmlp.artifacts import ArtifactInfo, read_artifact, read_verifications
from msmlp.errors import InputError
from msmlp.log import logger
from msmlp.runtime.base import Backend
from msmlp.runtime.registry import Candidate, Request, backend_specs, get_spec

__all__ = ["Candidate", "choose", "order", "select_backend", "unverified_order"]


def order(precision: str) -> tuple[Candidate, ...]:
    """Every backend's candidates for a graph of ``precision``, fastest first."""
    found = [c for spec in backend_specs() for c in spec.candidates if c.graph == precision]
    return tuple(sorted(found, key=lambda c: c.rank))


def unverified_order(precision: str) -> tuple[Candidate, ...]:
    """For unverified graphs: the candidates that compute at the graph's own precision, fastest first."""
    return tuple(c for c in order(precision) if not c.lowers)


def need(cand: Candidate) -> str:
    """The availability key a candidate needs: its backend, plus the hint when the hint lowers precision."""
    return f"{cand.backend}+{cand.hint}" if cand.lowers else cand.backend


def select_backend(path: Path, *, threads: int | None = None, precision: str | None = None) -> Backend:
    """The unloaded backend ``auto`` picks for ``path``; one INFO line says which and why.

    ``precision="bf16"`` is the user's explicit request: the fastest candidate with the bf16 hint,
    verified or not.
    """
    info = read_artifact(path)
    if precision == "bf16":
        chosen = _asked_for(info, "bf16")
        passed = read_verifications(info)
        status = "verified" if _passed(passed, chosen) else "NOT verified for this file"
        logger.info(
            "backend auto: %s for %s (asked for with --precision bf16; %s)", chosen.label, path.name, status
        )
        return _open(chosen, path, info, threads)
    if precision not in (None, "f32", "fp32"):
        raise InputError(f"--precision {precision!r} is not one of f32, bf16")
    available, missing = usable()
    chosen, reason = choose(info, available, missing)
    logger.info("backend auto: %s for %s (%s)", chosen.label, path.name, reason)
    return _open(chosen, path, info, threads)


def _asked_for(info: ArtifactInfo, hint: str) -> Candidate:
    """The fastest candidate with ``hint`` for the graph (an FP16 graph: the FP32 graphs' one)."""
    graph = info.precision if any(c.hint == hint for c in order(info.precision)) else "fp32"
    found = [c for c in order(graph) if c.hint == hint]
    if not found:
        raise InputError(f"--precision {hint}: no backend takes a {hint} hint for {info.path.name}")
    reasons = []
    for cand in found:
        why = get_spec(cand.backend).unavailable(cand.hint)
        if why is None:
            return cand
        reasons.append(f"{cand.backend}: {why}")
    raise InputError(
        f"--precision {hint} needs a backend that computes in {hint} here, but {'; '.join(reasons)}"
    )


def choose(
    info: ArtifactInfo,
    available: set[str],
    missing: Mapping[str, str],
    *,
    recorded: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Candidate, str]:
    """The first usable candidate for the graph and a one-clause reason (what was verified or skipped).

    ``available``/``missing``: :func:`usable`'s keys (see :func:`need`). ``recorded``: the
    verifications to go by (default: what model.json records for the file)."""
    candidates = order(info.precision)
    if not candidates:
        known = sorted({c.graph for spec in backend_specs() for c in spec.candidates})
        raise InputError(f"{info.path.name} has precision {info.precision!r}; auto knows {', '.join(known)}")
    passed = read_verifications(info) if recorded is None else recorded
    skipped = []
    if passed:
        for cand in candidates:
            if not _passed(passed, cand):
                skipped.append(f"{cand.label} not verified")
            elif need(cand) not in available:
                skipped.append(f"{cand.label}: {missing[need(cand)]}")
            else:
                summary = passed[cand.key]
                cosine = f", cosine {summary['cosine']:.6f}" if "cosine" in summary else ""
                why = f"fastest verified: {cand.key} passed on {summary.get('backend', cand.backend)}{cosine}"
                return cand, "; ".join([why, *skipped])
    for cand in unverified_order(info.precision) or candidates:
        if need(cand) in available:
            what = "no passed verification recorded in model.json" if passed else "no model.json lists it"
            return cand, f"unverified file ({what}): fastest at its own precision {info.precision}"
    installs = sorted({get_spec(c.backend).probe.install for c in candidates})
    raise InputError(f"no installed backend can run {info.path.name}; {' or '.join(installs)}")


def _passed(passed: Mapping[str, Mapping[str, Any]], cand: Candidate) -> bool:
    summary = passed.get(cand.key)
    if not summary or summary.get("passed") is not True:
        return False
    if summary.get("backend", "onnxruntime") != cand.backend:
        return False
    if not cand.lowers or cand.key == cand.hint:
        return True  # no lower hint, or a key that is itself the lowered precision (bf16)
    return summary.get("hint") == cand.hint  # a shared key records the hint it ran with


def usable() -> tuple[set[str], dict[str, str]]:
    """The availability keys (:func:`need`) every candidate has here, and why the others are missing."""
    available: set[str] = set()
    missing: dict[str, str] = {}
    for spec in backend_specs():
        for cand in spec.candidates:
            key = need(cand)
            if key in available or key in missing:
                continue
            why = spec.unavailable(cand.hint if cand.lowers else None)
            if why is None:
                available.add(key)
            else:
                missing[key] = why
    return available, missing


def _open(cand: Candidate, path: Path, info: ArtifactInfo, threads: int | None) -> Backend:
    request = Request(path, "onnx", precision=cand.hint, threads=threads, artifact=info)
    return get_spec(cand.backend).open(request)
