"""Each Triton kernel equals the reference shift bit for bit, run on the CPU by triton's interpreter."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from msmlp.models.layers import SHIFT1, SHIFT2, edge_shift_reference, roll_reference  # noqa: E402
from msmlp.models.msmlp import SHIFT_DIST, chunk_sizes  # noqa: E402
from msmlp.plugins import kernels as K  # noqa: E402

DTYPES = [torch.float32, torch.float16]


def grid(numel: int) -> tuple[int]:
    return (triton.cdiv(numel, K.BLOCK),)


def test_kernels_run_in_the_interpreter():
    assert type(K.edge_shift_kernel).__name__ == "InterpretedFunction"


def group_roll(x: torch.Tensor, chunks: list[int], shifts: list[int], dim: int) -> torch.Tensor:
    _n, c, h, w = x.shape
    y = torch.empty_like(x)
    K.group_roll_kernel[grid(x.numel())](
        x, x.numel(), h, w, y, C=c, AXIS=dim, BLOCK=K.BLOCK, **K.group_constexprs(c, chunks, shifts)
    )
    return y


def group_roll_reference(x: torch.Tensor, chunks: list[int], shifts: list[int], dim: int) -> torch.Tensor:
    return torch.cat([roll_reference(g, s, dim) for g, s in zip(torch.split(x, chunks, 1), shifts)], 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 5, 4, 4), (2, 7, 3, 5), (3, 13, 1, 6), (1, 20, 7, 2), (2, 11, 2, 1)])
@pytest.mark.parametrize("dim", [2, 3])
def test_group_roll_equals_torch_roll_per_chunk(shape, dim, dtype):
    x = torch.randn(shape).to(dtype)
    chunks = chunk_sizes(shape[1], len(SHIFT_DIST))  # torch.chunk sizes, uneven when C % 5 != 0
    shifts = list(SHIFT_DIST[: len(chunks)])
    assert torch.equal(group_roll(x, chunks, shifts, dim), group_roll_reference(x, chunks, shifts, dim))


def test_group_roll_takes_any_shift_and_up_to_eight_groups():
    x = torch.randn(2, 9, 3, 4)
    chunks, shifts = [1, 2, 1, 1, 1, 1, 1, 1], [-7, 5, 0, 3, -1, 2, 9, -4]
    for dim in (2, 3):
        assert torch.equal(group_roll(x, chunks, shifts, dim), group_roll_reference(x, chunks, shifts, dim))


def test_group_roll_refuses_groups_that_do_not_cover_the_channels():
    with pytest.raises(ValueError, match="groups summing to 8 channels"):
        K.group_constexprs(8, [4, 3], [1, 2])


def edge_shift(x: torch.Tensor, pattern: int) -> torch.Tensor:
    _n, h, w, c = x.shape
    y = torch.empty_like(x)
    K.edge_shift_kernel[grid(x.numel())](x, x.numel(), h, w, y, C=c, PATTERN=pattern, BLOCK=K.BLOCK)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [1, 3, 4, 5, 6, 7, 9, 13, 32])
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (4, 3), (6, 6)])
@pytest.mark.parametrize("batch", [1, 2])
def test_edge_shift_equals_reference(batch, hw, channels, dtype):
    x = torch.randn(batch, *hw, channels).to(dtype)
    for pattern_id, pattern in ((1, SHIFT1), (2, SHIFT2)):
        assert torch.equal(edge_shift(x, pattern_id), edge_shift_reference(x, pattern))


def split_attention(xs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n, h, w, c3 = xs.shape
    y = xs.new_empty((n, h, w, c3 // 3))
    K.split_attention_kernel[grid(y.numel())](xs, weights, y.numel(), h, w, y, C=c3 // 3, BLOCK=K.BLOCK)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 4, 4, 8), (2, 3, 5, 6), (2, 1, 7, 5), (3, 2, 2, 12)])
def test_fused_split_attention_equals_shift_then_weighted_sum(shape, dtype):
    n, h, w, c = shape
    xs = torch.randn(n, h, w, 3 * c).to(dtype)
    weights = torch.randn(n, 3, c).softmax(1).to(dtype)
    x1, x2, x3 = xs.float().chunk(3, -1)
    a = weights.float()[:, :, None, None, :]
    # float32 arithmetic in the same order, rounded once to the output type
    expected = edge_shift_reference(x1, SHIFT1) * a[:, 0] + edge_shift_reference(x2, SHIFT2) * a[:, 1]
    expected = (expected + x3 * a[:, 2]).to(dtype)
    assert torch.equal(split_attention(xs, weights), expected)


def test_fused_split_attention_equals_the_models_deployment_form():
    from msmlp.models.s2mlpv2 import SplitAttention

    torch.manual_seed(0)
    attn = SplitAttention(16)
    xs = torch.randn(2, 5, 6, 48)
    x1, x2, x3 = xs.chunk(3, -1)
    branches = (edge_shift_reference(x1, SHIFT1), edge_shift_reference(x2, SHIFT2), x3)
    total = branches[0] + branches[1] + branches[2]
    weights = attn.branch_weights(total.mean((1, 2))).detach()
    with torch.no_grad():
        expected = attn.forward_deploy(branches)
    assert torch.equal(split_attention(xs, weights), expected)
