"""Shared building blocks: the spatial shifts (reference and deployment forms) and LayerNorm variants.

Each shift exists twice. The *reference* form is how the papers' code writes it (``torch.roll`` for
MS-MLP, in-place slice assignment for S2-MLPv2); exported to ONNX these become Roll-free but awkward
graphs (Slice chains for roll in some exporters, ScatterND for slice assignment). The *deployment* form
computes the same values from slicing and concatenation only, so the ONNX graph holds Slice/Concat,
which TensorRT fuses into plain copies. Models use the deployment form unless told otherwise.

A third form of the whole-tensor shifts is a fused kernel. This module only keeps the slots:
:mod:`msmlp.plugins` registers its CUDA kernels here (models never import plugins), and the ONNX export
installs an export-time form for ``shift="plugin"`` through :func:`shift_override`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn as nn

# ---------------------------------------------------------------------------------------------- roll


def roll_reference(x: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    """Circular shift along ``dim`` (MS-MLP's ``torch.roll``)."""
    return torch.roll(x, shift, dim)


def roll_sliced(x: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    """``torch.roll`` from one split point: the tail moves to the front.

    The split is written with bounds counted from the ends of the axis (``x[-s:]``, ``x[:-s]``), so the
    exported Slices hold constants only and stay right at any size along ``dim`` (a dynamic H/W graph);
    a shift of at least the traced size is reduced modulo it first.
    """
    size = int(x.shape[dim])
    if abs(shift) >= size:
        shift %= size
    if shift == 0:
        return x
    # right by s: x[-s:] then x[:-s]; left by k (shift -k): x[k:] then x[:k], the same bounds
    return torch.cat((along(x, dim, -shift, None), along(x, dim, None, -shift)), dim)


def along(x: torch.Tensor, dim: int, start: int | None, stop: int | None) -> torch.Tensor:
    """``x[..., start:stop, ...]`` on axis ``dim``: one Slice with constant bounds, negative ones
    counted from the end, so it needs no Shape op."""
    index = [slice(None)] * x.dim()
    index[dim] = slice(start, stop)
    return x[tuple(index)]


# --------------------------------------------------------------------------------- dynamic sizes

_dynamic_sizes = False


@contextmanager
def dynamic_sizes() -> Iterator[None]:
    """Within the block (an export with dynamic H/W), :func:`grid_size` returns the traced sizes, so the
    reshapes between token layouts are recorded as shape arithmetic instead of the sizes seen."""
    global _dynamic_sizes
    before, _dynamic_sizes = _dynamic_sizes, True
    try:
        yield
    finally:
        _dynamic_sizes = before


def grid_size(x: torch.Tensor, dims: Sequence[int]) -> tuple:
    """The sizes of ``x`` along ``dims``: Python ints (the tracer records constants: a fixed-size graph
    without Shape ops), or, inside :func:`dynamic_sizes` while tracing, the traced sizes."""
    if _dynamic_sizes and torch.jit.is_tracing():
        return tuple(x.size(d) for d in dims)
    return tuple(int(x.shape[d]) for d in dims)


# ------------------------------------------------------------------------------- edge-replicate shift


def quarter_bounds(channels: int, groups: int = 4) -> list[int]:
    """Channel boundaries of ``groups`` near-equal groups; equal when ``channels % groups == 0``."""
    return [g * channels // groups for g in range(groups + 1)]


# (axis, step) per quarter, on channels-last tokens (N, H, W, C): axis 1 is H, axis 2 is W.
SHIFT1: tuple[tuple[int, int], ...] = ((1, 1), (1, -1), (2, 1), (2, -1))
SHIFT2: tuple[tuple[int, int], ...] = ((2, 1), (2, -1), (1, 1), (1, -1))


def edge_shift_reference(x: torch.Tensor, pattern: Sequence[tuple[int, int]] = SHIFT1) -> torch.Tensor:
    """S2-MLP's shift as public re-implementations write it: slice assignment on a copy.

    Each channel group moves one token along its axis; the vacated border keeps its original values.
    """
    out = x.clone()
    b = quarter_bounds(x.shape[-1], len(pattern))
    for g, (axis, step) in enumerate(pattern):
        c = slice(b[g], b[g + 1])
        n = x.shape[axis]
        dst = [slice(None)] * 3 + [c]
        src = [slice(None)] * 3 + [c]
        if step > 0:
            dst[axis], src[axis] = slice(1, n), slice(0, n - 1)
        else:
            dst[axis], src[axis] = slice(0, n - 1), slice(1, n)
        out[tuple(dst)] = x[tuple(src)]
    return out


def _edge_shift_one(x: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    # constant bounds from the ends (along): the same graph is right at any size, 1 included
    if int(x.shape[axis]) == 1 and not _dynamic_sizes:
        return x
    if step > 0:  # row 0 stays, row i takes row i-1
        return torch.cat((along(x, axis, 0, 1), along(x, axis, 0, -1)), axis)
    return torch.cat((along(x, axis, 1, None), along(x, axis, -1, None)), axis)


def edge_shift_sliced(x: torch.Tensor, pattern: Sequence[tuple[int, int]] = SHIFT1) -> torch.Tensor:
    """The same shift from Slice and Concat only (no scatter), for export."""
    b = quarter_bounds(int(x.shape[-1]), len(pattern))
    parts = []
    for g, (axis, step) in enumerate(pattern):
        if b[g + 1] > b[g]:
            parts.append(_edge_shift_one(x[..., b[g] : b[g + 1]], axis, step))
    if b[-1] < x.shape[-1]:
        parts.append(x[..., b[-1] :])
    return torch.cat(parts, -1)


SHIFT_FORMS = ("sliced", "reference")


def check_shift_form(form: str) -> str:
    if form not in SHIFT_FORMS:
        raise ValueError(f"shift_form must be one of {SHIFT_FORMS}, got {form!r}")
    return form


# --------------------------------------------------------------------------------- fused shift slots

# name -> implementation: "group_roll" (x, chunks, shifts, dim), "edge_shift" (x, pattern),
# "split_attention" (y, attn) where y holds the three S2-MLPv2 branches side by side on the last axis.
FUSED_NAMES = ("group_roll", "edge_shift", "split_attention")
_cuda_kernels: dict[str, Callable[..., torch.Tensor]] = {}
_override: ContextVar[dict[str, Callable[..., torch.Tensor]] | None] = ContextVar(
    "shift_override", default=None
)


def register_cuda_kernel(name: str, fn: Callable[..., torch.Tensor]) -> None:
    """Let the deployment form run ``fn`` for CUDA tensors (called by :mod:`msmlp.plugins`)."""
    if name not in FUSED_NAMES:
        raise ValueError(f"unknown fused shift {name!r}; expected one of {FUSED_NAMES}")
    _cuda_kernels[name] = fn


@contextmanager
def shift_override(**fns: Callable[..., torch.Tensor]) -> Iterator[None]:
    """Within the block, deployment-form modules call these instead (export traces plugin nodes so)."""
    token = _override.set(fns)
    try:
        yield
    finally:
        _override.reset(token)


def fused(name: str, x: torch.Tensor) -> Callable[..., torch.Tensor] | None:
    """The fused implementation of ``name`` to use for ``x``, or None for the Slice/Concat form."""
    if torch.compiler.is_compiling():  # dynamo cannot trace ContextVar.get (a graph break per block);
        return None  # inductor fuses the Slice/Concat form itself
    active = _override.get()
    if active is not None:
        return active.get(name)
    # the kernels have no backward: training keeps the differentiable Slice/Concat form
    if x.is_cuda and not torch.jit.is_tracing() and not (x.requires_grad and torch.is_grad_enabled()):
        return _cuda_kernels.get(name)
    return None


# ------------------------------------------------------------------------------------ feature info


def pyramid_feature_info(prefix: str, dims: Sequence[int], first_stride: int) -> list[dict]:
    """timm's ``feature_info`` for a pyramid whose stage ``i`` (module ``<prefix>.<i>``) outputs
    ``dims[i]`` channels at stride ``first_stride * 2**i``."""
    return [
        {"module": f"{prefix}.{i}", "num_chs": dim, "reduction": first_stride * 2**i}
        for i, dim in enumerate(dims)
    ]


# ----------------------------------------------------------------------------------------- init


def init_linear(m: nn.Module) -> None:
    """Both families' initialisation: truncated normal (std 0.02) Linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
