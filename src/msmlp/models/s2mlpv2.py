"""S2-MLPv2: Yu et al., "S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision" (arXiv 2108.01072).

No official code was released. The configuration here reproduces the paper's table (Small/7 25.11M
params, 6.90 GMACs; Medium/7 55.27M, 16.28 GMACs): a 7x7 patch embed to 32x32 tokens, blocks at C1,
a 2x2 stride-2 conv to 16x16 tokens, blocks at C2, then LayerNorm, token mean and a linear head.
Tokens are channels-last. Between stages they are (N, H, W, C); inside a stage the residual stream is
(N, H*W, C) and only the shifts see the grid. The values are the same either way, but OpenVINO's CPU
plugin fuses an INT8 FullyConnected's dequantize scale, bias, GELU and requantization only into a rank-2
or rank-3 output (on rank 4 it takes axis 1, H, for the channels, so every bias Add ran on its own),
and it matches a LayerNormalization to one MVN only on rank 3 (docs/performance.md, issue 21).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from msmlp.models.family import BlockSpec, FamilySpec
from msmlp.models.layers import (
    SHIFT1,
    SHIFT2,
    SHIFT_FORMS,
    check_shift_form,
    edge_shift_reference,
    edge_shift_sliced,
    fused,
    grid_size,
    init_linear,
    pyramid_feature_info,
)
from msmlp.models.registry import DeployConfig, register_family, register_model

PAPER = "Yu et al. 2021, arXiv 2108.01072"
LN_EPS = 1e-6


class SplitAttention(nn.Module):
    """ResNeSt-style attention over k branches: softmax across branches of an MLP of the pooled sum.
    Branches are channels-last tokens, (N, L, C) or (N, H, W, C); the pool is over every token axis.

    Two forms compute the same values. The *reference* form stacks the branches and reduces over the
    stack, as the paper's formula reads; exported, that copies every branch into one tensor and then
    runs a strided ReduceSum. The *deployment* form (``deploy=True``, the default) adds the branches
    where they are, so the graph holds only Add and Mul.
    """

    def __init__(self, dim: int, branches: int = 3, deploy: bool = True) -> None:
        super().__init__()
        self.branches = branches
        self.deploy = deploy
        self.fc1 = nn.Linear(dim, dim // 4, bias=False)
        self.fc2 = nn.Linear(dim // 4, dim * branches, bias=False)

    def branch_weights(self, pooled: torch.Tensor) -> torch.Tensor:
        """Softmax weights (N, k, C) from the token mean of the branch sum (N, C)."""
        n, c = pooled.shape
        return self.fc2(F.gelu(self.fc1(pooled))).reshape(n, self.branches, c).softmax(1)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_deploy(xs) if self.deploy else self.forward_reference(xs)

    def forward_reference(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(tuple(xs), 1)  # N, k, *tokens, C
        w = self.branch_weights(stacked.sum(1).mean(_token_axes(xs[0])))
        return (stacked * _per_token(w, xs[0].dim())).sum(1)

    def forward_deploy(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        w = _per_token(self.branch_weights(total.mean(_token_axes(total))), total.dim()).unbind(1)
        out = xs[0] * w[0]
        for x, wi in zip(xs[1:], w[1:]):
            out = out + x * wi
        return out


def _token_axes(x: torch.Tensor) -> tuple[int, ...]:
    """The token axes of channels-last ``x``: all but the batch and the channels."""
    return tuple(range(1, x.dim() - 1))


def _per_token(w: torch.Tensor, dims: int) -> torch.Tensor:
    """Branch weights (N, k, C) shaped to broadcast over the tokens of ``dims``-D branches."""
    for _ in range(dims - 2):
        w = w.unsqueeze(2)
    return w


class S2Mix(nn.Module):
    """Expand to three branches, shift two of them in transposed patterns, fuse by split attention."""

    def __init__(self, dim: int, shift_form: str = "sliced") -> None:
        super().__init__()
        self.deploy = check_shift_form(shift_form) == "sliced"
        self.shift = edge_shift_sliced if self.deploy else edge_shift_reference
        self.proj_in = nn.Linear(dim, 3 * dim)
        self.attn = SplitAttention(dim, 3, deploy=self.deploy)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x``: (N, H*W, C) tokens on the ``grid`` (H, W); the shifts see them as (N, H, W, C)."""
        h, w = grid
        y = self.proj_in(x)
        c = int(y.shape[-1]) // 3  # static sizes: the tracer records constants, not Shape ops
        fused_mix = fused("split_attention", y) if self.deploy else None
        if fused_mix is not None:  # shifts and weighted sum in one pass over y (CUDA)
            return self.proj_out(fused_mix(y.reshape(-1, h, w, 3 * c), self.attn).reshape(-1, h * w, c))
        x1, x2, x3 = y.chunk(3, -1)
        shift = (fused("edge_shift", y) if self.deploy else None) or self.shift

        def shifted(part: torch.Tensor, pattern: Sequence[tuple[int, int]]) -> torch.Tensor:
            return shift(part.reshape(-1, h, w, c), pattern).reshape(-1, h * w, c)

        return self.proj_out(self.attn((shifted(x1, SHIFT1), shifted(x2, SHIFT2), x3)))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float = 3.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class S2Block(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 3.0, shift_form: str = "sliced") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mix = S2Mix(dim, shift_form)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x``: (N, H*W, C) tokens on the ``grid`` (H, W)."""
        x = x + self.mix(self.norm1(x), grid)
        return x + self.mlp(self.norm2(x))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """N,C,H,W conv output to N,H,W,C tokens, the same values as ``permute(0, 2, 3, 1)`` but exported as
    a transpose of the flattened (N,C,HW) tensor. From a 4-D permute, OpenVINO keeps the conv's blocked
    layout for the whole residual stream and reorders every FullyConnected output back to it before the
    residual Add; this way the stream stays plain row-major and those reorders go (measured with
    benchmarks/layouts.py, see docs/performance.md)."""
    c = int(x.shape[1])
    h, w = grid_size(x, (2, 3))
    return x.reshape(-1, c, h * w).transpose(1, 2).reshape(-1, h, w, c)  # -1: no Shape op for the batch


class Blocks(nn.Sequential):
    """``nn.Sequential`` whose blocks also get the token grid (the same names in state dicts and graphs)."""

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        for block in self:
            x = block(x, grid)
        return x


class Stage(nn.Module):
    """Optional 2x2 stride-2 downsample (channels-last in and out), then blocks on (N, H*W, C) tokens
    (module docstring)."""

    def __init__(self, in_dim: int, dim: int, depth: int, downsample: bool, **block_kw) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, kernel_size=2, stride=2) if downsample else None
        self.blocks = Blocks(*(S2Block(dim, **block_kw) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = to_tokens(self.downsample(x.permute(0, 3, 1, 2)))
        h, w = grid_size(x, (1, 2))
        c = int(x.shape[3])
        return self.blocks(x.reshape(-1, h * w, c), (h, w)).reshape(-1, h, w, c)


class S2MLPv2(nn.Module):
    def __init__(
        self,
        dims: Sequence[int] = (192, 384),
        depths: Sequence[int] = (4, 14),
        patch_size: int = 7,
        num_classes: int = 1000,
        in_chans: int = 3,
        mlp_ratio: float = 3.0,
        shift_form: str = "sliced",
    ) -> None:
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f"dims {tuple(dims)} and depths {tuple(depths)} differ in length")
        self.num_classes = num_classes
        self.num_features = dims[-1]
        self.dims = tuple(dims)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, dims[0], kernel_size=patch_size, stride=patch_size)
        self.stages = nn.ModuleList(
            Stage(dims[max(i - 1, 0)], dims[i], depths[i], i > 0, mlp_ratio=mlp_ratio, shift_form=shift_form)
            for i in range(len(dims))
        )
        self.norm = nn.LayerNorm(self.num_features, eps=LN_EPS)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = to_tokens(self.patch_embed.proj(x))
        for stage in self.stages:
            x = stage(x)
        h, w = grid_size(x, (1, 2))
        c = self.num_features
        return self.norm(x.reshape(-1, h * w, c)).reshape(-1, h, w, c)  # rank 3: OpenVINO's MVN

    @property
    def feature_info(self) -> list[dict]:
        """Per stage, what :meth:`forward_stages` returns (:func:`pyramid_feature_info`)."""
        return pyramid_feature_info("stages", self.dims, self.patch_embed.proj.stride[0])

    def forward_stages(self, x: torch.Tensor, stages: int | None = None) -> list[torch.Tensor]:
        """Each stage's output as N,C,H,W, at strides 7 and 14, without the classifier's final LayerNorm
        (as for every stage). ``stages``: stop after that many."""
        x = to_tokens(self.patch_embed.proj(x))
        found = []
        for stage in self.stages[: len(self.stages) if stages is None else stages]:
            x = stage(x)
            found.append(x.permute(0, 3, 1, 2))
        return found

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((1, 2))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


FAMILY = register_family(
    FamilySpec(
        name="s2mlpv2",
        blocks=(BlockSpec(S2Block, groups={"mix": ("norm1", "mix"), "mlp": ("norm2", "mlp")}, own="mix"),),
        fp32_norms=(nn.LayerNorm,),  # each exports as one LayerNormalization node
        shift_forms=SHIFT_FORMS,
        plugin_shifts=("edge_shift",),  # split attention's fused kernel has no plugin node
        classifier="head",
        input_stride=14,  # 7x7 patch embed, then one 2x2 stride-2 conv
    )
)


def _cfg(**kw) -> DeployConfig:
    return DeployConfig(family=FAMILY.name, paper=PAPER, interpolation="bicubic", crop_pct=0.875, **kw)


@register_model(_cfg())
def s2mlpv2_small(**kw) -> S2MLPv2:
    """S2-MLPv2-Small/7: 4 blocks at 192 channels, 14 at 384 (25M params, 6.9 GMACs)."""
    return S2MLPv2(**{"dims": (192, 384), "depths": (4, 14), **kw})


@register_model(_cfg())
def s2mlpv2_medium(**kw) -> S2MLPv2:
    """S2-MLPv2-Medium/7: 7 blocks at 256 channels, 17 at 512 (55M params, 16.3 GMACs)."""
    return S2MLPv2(**{"dims": (256, 512), "depths": (7, 17), **kw})


@register_model(_cfg(input_size=(3, 112, 112), extra={"test_config": True}))
def s2mlpv2_micro(**kw) -> S2MLPv2:
    """A small S2-MLPv2 for fast tests: 32 and 64 channels, two blocks each, 112x112 input (16x16 then
    8x8 tokens). Not a paper model."""
    return S2MLPv2(**{"dims": (32, 64), "depths": (2, 2), **kw})
