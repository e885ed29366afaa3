"""The deployment-form shifts (slice/concat) equal the reference forms on many shapes."""

from __future__ import annotations

import pytest
import torch

from msmlp.models.layers import (
    SHIFT1,
    SHIFT2,
    edge_shift_reference,
    edge_shift_sliced,
    quarter_bounds,
    roll_reference,
    roll_sliced,
)

SHAPES = [(1, 3, 5, 7), (2, 4, 8, 8), (2, 7, 1, 9), (1, 5, 13, 2), (3, 16, 6, 11)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("shift", [-9, -2, -1, 0, 1, 2, 3, 14])
def test_roll_sliced_equals_torch_roll(shape, dim, shift):
    x = torch.randn(shape)
    assert torch.equal(roll_sliced(x, shift, dim), roll_reference(x, shift, dim))


@pytest.mark.parametrize("channels", [1, 3, 4, 5, 6, 7, 8, 9, 13, 64, 66, 97])
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (2, 2), (5, 3), (8, 8), (7, 16)])
@pytest.mark.parametrize("pattern", [SHIFT1, SHIFT2], ids=["shift1", "shift2"])
def test_edge_shift_sliced_equals_reference(channels, hw, pattern):
    x = torch.randn(2, *hw, channels)
    expected = edge_shift_reference(x, pattern)
    got = edge_shift_sliced(x, pattern)
    assert got.shape == x.shape
    assert torch.equal(got, expected)


def test_edge_shift_semantics_on_a_ramp():
    # channels-last 1x4x4x4: quarter 0 moves +1 along H, so row 0 keeps its value and row i takes row i-1
    x = torch.arange(16.0).reshape(1, 4, 4, 1).repeat(1, 1, 1, 4)
    y = edge_shift_sliced(x, SHIFT1)
    rows = x[0, :, 0, 0]
    assert torch.equal(y[0, :, 0, 0], rows[[0, 0, 1, 2]])  # +1 along H, edge replicated
    assert torch.equal(y[0, :, 0, 1], rows[[1, 2, 3, 3]])  # -1 along H
    cols = x[0, 0, :, 2]
    assert torch.equal(y[0, 0, :, 2], cols[[0, 0, 1, 2]])  # +1 along W
    assert torch.equal(y[0, 0, :, 3], cols[[1, 2, 3, 3]])  # -1 along W
    # shift2 is the transpose: quarter 0 moves along W
    assert torch.equal(edge_shift_sliced(x, SHIFT2)[0, 0, :, 0], x[0, 0, :, 0][[0, 0, 1, 2]])


def test_quarter_bounds_cover_every_channel():
    for c in range(1, 40):
        b = quarter_bounds(c)
        assert b[0] == 0 and b[-1] == c and b == sorted(b)
        if c % 4 == 0:
            assert len({b[i + 1] - b[i] for i in range(4)}) == 1


def test_sliced_forms_are_differentiable_like_reference():
    x = torch.randn(1, 6, 5, 9, requires_grad=True)
    edge_shift_sliced(x).sum().backward()
    g1 = x.grad.clone()
    x.grad = None
    edge_shift_reference(x).sum().backward()
    assert torch.equal(g1, x.grad)
