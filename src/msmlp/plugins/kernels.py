"""Triton kernels for both shift families, written once for three users: the PyTorch CUDA ops
(:mod:`msmlp.plugins.torch_ops`), the TensorRT AOT plugin (:mod:`msmlp.plugins.trt_plugin`, which embeds
their PTX), and the CPU interpreter tests (``TRITON_INTERPRET=1``).

Calling convention, kept by every kernel for TensorRT's AOT launch: input pointers, then int32 scalars,
then output pointers; everything that fixes the layout (channels, channel groups, shifts) is a
``tl.constexpr`` so one compiled kernel serves every batch size. Arithmetic happens in float32 and is
rounded once to the output type, so FP16 results are the correctly rounded FP32 results.

Importing this module imports triton; import it only where triton is wanted.
"""

from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 1024  # elements per program: the kernels are memory-bound copies with index arithmetic
NUM_WARPS = 4
MAX_GROUPS = 8  # channel groups a grouped roll supports (MS-MLP uses 5)


@triton.jit
def _group_shift(c, B1, B2, B3, B4, B5, B6, B7, S0, S1, S2, S3, S4, S5, S6, S7):
    s = tl.where(c >= B1, S1, S0)
    s = tl.where(c >= B2, S2, s)
    s = tl.where(c >= B3, S3, s)
    s = tl.where(c >= B4, S4, s)
    s = tl.where(c >= B5, S5, s)
    s = tl.where(c >= B6, S6, s)
    return tl.where(c >= B7, S7, s)


@triton.jit
def group_roll_kernel(
    X,
    total,
    H,
    W,
    Y,
    C: tl.constexpr,
    AXIS: tl.constexpr,
    B1: tl.constexpr,
    B2: tl.constexpr,
    B3: tl.constexpr,
    B4: tl.constexpr,
    B5: tl.constexpr,
    B6: tl.constexpr,
    B7: tl.constexpr,
    S0: tl.constexpr,
    S1: tl.constexpr,
    S2: tl.constexpr,
    S3: tl.constexpr,
    S4: tl.constexpr,
    S5: tl.constexpr,
    S6: tl.constexpr,
    S7: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """MS-MLP's grouped roll on N,C,H,W: channel group g (bounds B1..B7) rolled by S_g along H (AXIS 2)
    or W (AXIS 3); ``y[i] = x[(i - s) mod n]`` as ``torch.roll``, for any shift and size."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    w = offs % W
    h = (offs // W) % H
    c = (offs // (W * H)) % C
    s = _group_shift(c, B1, B2, B3, B4, B5, B6, B7, S0, S1, S2, S3, S4, S5, S6, S7)
    src = offs - w + ((w - s) % W + W) % W if AXIS == 3 else offs + (((h - s) % H + H) % H - h) * W
    tl.store(Y + offs, tl.load(X + src, mask=mask), mask=mask)


@triton.jit
def _edge_source(offs, H, W, C: tl.constexpr, PATTERN: tl.constexpr, ROW: tl.constexpr):
    """Flat index (in a row of ROW elements per token) each output element of an edge shift reads."""
    c = offs % C
    w = (offs // C) % W
    h = (offs // (C * W)) % H
    tok = offs // C  # n*H*W + h*W + w
    # quarter of channel c, as quarter_bounds: q*C//4 <= c < (q+1)*C//4 (empty quarters when C < 4)
    q = (c >= C // 4).to(tl.int32) + (c >= (2 * C) // 4).to(tl.int32) + (c >= (3 * C) // 4).to(tl.int32)
    # PATTERN 1: quarters 0,1 along H (+1, -1), 2,3 along W; PATTERN 2: the transpose
    along_h = q < 2 if PATTERN == 1 else q >= 2
    step = tl.where((q % 2) == 0, 1, -1)
    hs = tl.where(along_h, tl.minimum(tl.maximum(h - step, 0), H - 1), h)
    ws = tl.where(along_h, w, tl.minimum(tl.maximum(w - step, 0), W - 1))
    return (tok + (hs - h) * W + (ws - w)) * ROW + c


@triton.jit
def edge_shift_kernel(X, total, H, W, Y, C: tl.constexpr, PATTERN: tl.constexpr, BLOCK: tl.constexpr):
    """S2-MLPv2's edge-replicating shift on contiguous N,H,W,C: each channel quarter moves one token;
    the vacated border keeps its values (source index clamped to the edge)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    src = _edge_source(offs, H, W, C, PATTERN, C)
    tl.store(Y + offs, tl.load(X + src, mask=mask), mask=mask)


@triton.jit
def split_attention_kernel(Xs, A, total, H, W, Y, C: tl.constexpr, BLOCK: tl.constexpr):
    """S2-MLPv2's mix in one pass: ``y = a0*shift1(x1) + a1*shift2(x2) + a2*x3`` where Xs is the
    N,H,W,3C projection holding x1|x2|x3 side by side and A the N,3,C branch weights. Reads Xs once
    and writes y once, instead of writing two shifted copies and reading everything back."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    c = offs % C
    n = offs // (C * H * W)
    tok = offs // C
    a = A + n * 3 * C + c
    x1 = tl.load(Xs + _edge_source(offs, H, W, C, 1, 3 * C), mask=mask).to(tl.float32)
    x2 = tl.load(Xs + C + _edge_source(offs, H, W, C, 2, 3 * C), mask=mask).to(tl.float32)
    x3 = tl.load(Xs + 2 * C + tok * 3 * C + c, mask=mask).to(tl.float32)
    a0 = tl.load(a, mask=mask).to(tl.float32)
    a1 = tl.load(a + C, mask=mask).to(tl.float32)
    a2 = tl.load(a + 2 * C, mask=mask).to(tl.float32)
    out = x1 * a0 + x2 * a1
    out = out + x3 * a2
    tl.store(Y + offs, out.to(Y.dtype.element_ty), mask=mask)


def group_constexprs(channels: int, chunks, shifts) -> dict[str, int]:
    """Constexprs B1..B7 (group starts; C for unused groups) and S0..S7 (shifts) of a grouped roll."""
    chunks, shifts = [int(c) for c in chunks], [int(s) for s in shifts]
    if len(chunks) != len(shifts) or not 1 <= len(chunks) <= MAX_GROUPS or sum(chunks) != channels:
        raise ValueError(
            f"grouped roll needs 1..{MAX_GROUPS} groups summing to {channels} channels with one shift each; "
            f"got chunks {chunks} and shifts {shifts}"
        )
    starts = [sum(chunks[:i]) for i in range(1, len(chunks))]
    out = {f"B{i}": channels for i in range(1, MAX_GROUPS)}
    out.update({f"B{i}": b for i, b in enumerate(starts, 1)})
    out.update({f"S{i}": 0 for i in range(MAX_GROUPS)})
    out.update({f"S{i}": s for i, s in enumerate(shifts)})
    return out
