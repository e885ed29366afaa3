"""The Triton kernels as PyTorch ops on CUDA tensors (``torch.library.triton_op``), so a GPU user
without TensorRT gets fused shifts, and ``torch.compile`` sees through them.

Imported lazily by :mod:`msmlp.plugins` on the first CUDA call; importing it needs triton.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
from torch.library import triton_op, wrap_triton

from msmlp.errors import InputError
from msmlp.plugins import kernels as K
from msmlp.plugins.onnx_nodes import pattern_id

FLOATS = (torch.float32, torch.float16)


def _check(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dtype not in FLOATS or x.dim() != 4:
        raise InputError(
            f"{what} takes a 4-d float32 or float16 tensor, got {x.dtype} of shape {tuple(x.shape)}"
        )
    return x.contiguous()


def _grid(total: int) -> tuple[int]:
    return (triton.cdiv(total, K.BLOCK),)


@triton_op("msmlp::group_roll", mutates_args=())
def _group_roll(x: torch.Tensor, chunks: list[int], shifts: list[int], dim: int) -> torch.Tensor:
    _n, c, h, w = x.shape
    y = torch.empty_like(x)
    wrap_triton(K.group_roll_kernel)[_grid(x.numel())](
        x, x.numel(), h, w, y, C=c, AXIS=dim, BLOCK=K.BLOCK, **K.group_constexprs(c, chunks, shifts)
    )
    return y


@triton_op("msmlp::edge_shift", mutates_args=())
def _edge_shift(x: torch.Tensor, pattern: int) -> torch.Tensor:
    _n, h, w, c = x.shape
    y = torch.empty_like(x)
    wrap_triton(K.edge_shift_kernel)[_grid(x.numel())](
        x, x.numel(), h, w, y, C=c, PATTERN=pattern, BLOCK=K.BLOCK
    )
    return y


@triton_op("msmlp::split_attention_mix", mutates_args=())
def _split_attention_mix(xs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n, h, w, c3 = xs.shape
    y = xs.new_empty((n, h, w, c3 // 3))
    wrap_triton(K.split_attention_kernel)[_grid(y.numel())](
        xs, weights.to(xs.dtype).contiguous(), y.numel(), h, w, y, C=c3 // 3, BLOCK=K.BLOCK
    )
    return y


def group_roll(x: torch.Tensor, chunks: Sequence[int], shifts: Sequence[int], dim: int) -> torch.Tensor:
    """MS-MLP's grouped roll (N,C,H,W): group i rolled by shifts[i] along ``dim`` (2 = H, 3 = W)."""
    if dim not in (2, 3):
        raise InputError(f"group_roll shifts along H or W (dim 2 or 3), got dim {dim}")
    return _group_roll(_check(x, "group_roll"), list(chunks), list(shifts), dim)


def edge_shift(x: torch.Tensor, pattern: Sequence[tuple[int, int]]) -> torch.Tensor:
    """S2-MLPv2's edge-replicating shift (N,H,W,C) for SHIFT1 or SHIFT2."""
    return _edge_shift(_check(x, "edge_shift"), pattern_id(pattern))


def shifted_token_sum(x: torch.Tensor, pattern: Sequence[tuple[int, int]] | None) -> torch.Tensor:
    """Sum over tokens (N,C) of the edge-shifted ``x`` without shifting it: a +1 shift along an axis
    repeats the first row and drops the last, so the sum changes by first minus last row."""
    total = x.sum((1, 2))
    if pattern is None:
        return total
    c = x.shape[-1]
    bounds = [g * c // len(pattern) for g in range(len(pattern) + 1)]
    corrections = []
    for g, (axis, step) in enumerate(pattern):
        q = x[..., bounds[g] : bounds[g + 1]]
        first, last = q.select(axis, 0).sum(1), q.select(axis, -1).sum(1)
        corrections.append(first - last if step > 0 else last - first)
    return total + torch.cat(corrections, -1)


def split_attention(y: torch.Tensor, attn: torch.nn.Module) -> torch.Tensor:
    """S2-MLPv2's shift + split attention from the N,H,W,3C projection ``y``, in one kernel pass over
    ``y``; the pooled branch sum that feeds the attention MLP is taken without shifting anything."""
    from msmlp.models.layers import SHIFT1, SHIFT2

    y = _check(y, "split_attention")
    x1, x2, x3 = y.chunk(3, -1)
    tokens = y.shape[1] * y.shape[2]
    pooled = (shifted_token_sum(x1, SHIFT1) + shifted_token_sum(x2, SHIFT2) + x3.sum((1, 2))) / tokens
    return _split_attention_mix(y, attn.branch_weights(pooled))
