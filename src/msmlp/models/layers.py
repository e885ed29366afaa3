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
    """``torch.roll`` from one split point: the tail moves to the front. Static sizes only."""
    size = x.shape[dim]
    shift %= size
    if shift == 0:
        return x
    tail = x.narrow(dim, size - shift, shift)
    head = x.narrow(dim, 0, size - shift)
    return torch.cat((tail, head), dim)


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
    n = int(x.shape[axis])  # static sizes: the tracer records constants, not shape arithmetic
    if n == 1:
        return x
    if step > 0:  # row 0 stays, row i takes row i-1
        return torch.cat((x.narrow(axis, 0, 1), x.narrow(axis, 0, n - 1)), axis)
    return torch.cat((x.narrow(axis, 1, n - 1), x.narrow(axis, n - 1, 1)), axis)


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


# ----------------------------------------------------------------------------------------- init


def init_linear(m: nn.Module) -> None:
    """Both families' initialisation: truncated normal (std 0.02) Linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
