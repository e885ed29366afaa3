"""MS-MLP: Zheng et al., "Mixing and Shifting: Exploiting Global and Local Dependencies in Vision MLPs"
(arXiv 2202.06510). Parameter names follow the official ``models/ms_mlp.py`` so its released
checkpoints (``*_ckpt_epoch299.pth``, state dict under ``model``) load without renaming.

Layout: 4x4 patch embed + LayerNorm, four stages of mix-shift blocks at C, 2C, 4C, 8C channels with a
2x2 stride-2 patch embed between stages, then average pool, LayerNorm and a linear head.

Two forms with the same parameters. The reference form (``shift_form="reference"``) is the official
code: ``torch.roll`` shifts, and each block's channel MLP on a channels-last copy (permute, LayerNorm,
Linear, GELU, Linear, permute back). The deployment form (``"sliced"``, the default, what is exported)
rolls by Slice/Concat and keeps the whole network channels-first: LayerNorm over C written out
(ReduceMean, Sub, Mul, Sqrt, Div) and the two Linears as 1x1 convolutions. That removes 2 transposes
per block and lets runtimes fuse bias, GELU and the INT8 requantization into the convolution, which
makes OpenVINO BF16 and INT8 faster than with the channels-last MLP (``benchmarks/layouts.py``; the
figures are in docs/performance.md). Logits agree with the reference form to float rounding (max abs
difference ~2e-6 on synthetic weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from msmlp.models.family import BlockSpec, FamilySpec
from msmlp.models.layers import (
    SHIFT_FORMS,
    check_shift_form,
    fused,
    init_linear,
    pyramid_feature_info,
    roll_reference,
    roll_sliced,
)
from msmlp.models.registry import DeployConfig, register_family, register_model

PAPER = "Zheng et al. 2022, arXiv 2202.06510"
SHIFT_DIST = (-2, -1, 0, 1, 2)
MIX_SIZE = ((1, 1, 3, 5, 7), (1, 3, 3, 5, 7), (1, 5, 5, 5, 7), (1, 7, 7, 7, 7))
LN_EPS = 1e-6


def chunk_sizes(channels: int, chunks: int) -> list[int]:
    """Channel counts of ``torch.chunk(x, chunks, 1)``: ceil-sized chunks, the last one smaller."""
    step = -(-channels // chunks)
    sizes = [min(step, channels - i) for i in range(0, channels, step)]
    return sizes


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channels; with ``channels_first`` it takes N,C,H,W directly (written out,
    since ONNX's LayerNormalization normalizes trailing axes only). Same parameters either way."""

    def __init__(self, dim: int, eps: float = LN_EPS, channels_first: bool = False) -> None:
        super().__init__(dim, eps=eps)
        self.channels_first = channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_first:
            return super().forward(x)
        centered = x - x.mean(1, keepdim=True)
        std = torch.sqrt((centered * centered).mean(1, keepdim=True) + self.eps)
        return centered / std * self.weight[:, None, None] + self.bias[:, None, None]


class PointwiseLinear(nn.Linear):
    """``nn.Linear`` over the channels; with ``channels_first`` a 1x1 convolution on N,C,H,W with the
    same weight and bias (so checkpoints load unchanged)."""

    def __init__(self, dim_in: int, dim_out: int, channels_first: bool = False) -> None:
        super().__init__(dim_in, dim_out)
        self.channels_first = channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_first:
            return super().forward(x)
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class MixShiftBlock(nn.Module):
    """Shift channel groups by different distances along W and H, mix each with a depthwise conv,
    sum the two directions, then a channel MLP with layer scale and a residual."""

    def __init__(
        self,
        dim: int,
        mix_size: Sequence[int],
        shift_dist: Sequence[int] = SHIFT_DIST,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-6,
        shift_form: str = "sliced",
    ) -> None:
        super().__init__()
        if len(mix_size) != len(shift_dist):
            raise ValueError(
                f"mix_size {tuple(mix_size)} and shift_dist {tuple(shift_dist)} differ in length"
            )
        self.shift_dist = tuple(shift_dist)
        self.chunks = chunk_sizes(dim, len(shift_dist))
        if len(self.chunks) != len(shift_dist):
            raise ValueError(f"dim {dim} is too small to split into {len(shift_dist)} channel groups")
        self.deploy = check_shift_form(shift_form) == "sliced"
        self.roll: Callable[[torch.Tensor, int, int], torch.Tensor] = (
            roll_sliced if self.deploy else roll_reference
        )

        def dwconvs() -> nn.ModuleList:
            return nn.ModuleList(
                nn.Conv2d(c, c, kernel_size=k, padding=k // 2, groups=c)
                for c, k in zip(self.chunks, mix_size)
            )

        self.dwconv_lr = dwconvs()  # shifted along W
        self.dwconv_td = dwconvs()  # shifted along H
        hidden = int(mlp_ratio * dim)
        self.norm = ChannelLayerNorm(dim, channels_first=self.deploy)
        self.pwconv1 = PointwiseLinear(dim, hidden, channels_first=self.deploy)
        self.act = nn.GELU()
        self.pwconv2 = PointwiseLinear(hidden, dim, channels_first=self.deploy)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))

    def shifted_groups(self, x: torch.Tensor, dim: int) -> Sequence[torch.Tensor]:
        """Channel group i rolled by shift_dist[i] along ``dim``: one fused op where one is installed
        (CUDA kernel, TensorRT plugin node at export), else one roll per group."""
        group_roll = fused("group_roll", x) if self.deploy else None
        if group_roll is not None:
            return torch.split(group_roll(x, self.chunks, self.shift_dist, dim), self.chunks, 1)
        return [self.roll(g, s, dim) for g, s in zip(torch.split(x, self.chunks, 1), self.shift_dist)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lr = [conv(g) for g, conv in zip(self.shifted_groups(x, 3), self.dwconv_lr)]
        td = [conv(g) for g, conv in zip(self.shifted_groups(x, 2), self.dwconv_td)]
        y = torch.cat(lr, 1) + torch.cat(td, 1)
        if self.norm.channels_first:  # the deployment form (module docstring)
            return x + self.gamma[:, None, None] * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y.permute(0, 2, 3, 1)))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """Non-overlapping conv patchify followed by LayerNorm; N,C,H,W in and out."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, channels_first: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = ChannelLayerNorm(embed_dim, channels_first=channels_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm.channels_first:
            return self.norm(self.proj(x))
        return self.norm(self.proj(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class BasicLayer(nn.Module):
    """One stage: blocks, then (except the last stage) a 2x2 patch embed that doubles channels."""

    def __init__(self, dim: int, depth: int, mix_size: Sequence[int], downsample: bool, **block_kw) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MixShiftBlock(dim, mix_size, **block_kw) for _ in range(depth))
        channels_first = check_shift_form(block_kw.get("shift_form", "sliced")) == "sliced"
        self.downsample = PatchEmbed(dim, 2 * dim, 2, channels_first) if downsample else None

    def forward(
        self, x: torch.Tensor, features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The stage's output; with ``features``, also its blocks' output before the downsample (the
        stage's feature map), as ``(features, output)``."""
        for block in self.blocks:
            x = block(x)
        out = self.downsample(x) if self.downsample is not None else x
        return (x, out) if features else out


class MSMLP(nn.Module):
    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (3, 3, 9, 3),
        mix_size: Sequence[Sequence[int]] = MIX_SIZE,
        shift_dist: Sequence[int] = SHIFT_DIST,
        num_classes: int = 1000,
        in_chans: int = 3,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-6,
        shift_form: str = "sliced",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.dims = tuple(embed_dim * 2**i for i in range(len(depths)))
        self.patch_embed = PatchEmbed(
            in_chans, embed_dim, patch_size, check_shift_form(shift_form) == "sliced"
        )
        self.layers = nn.ModuleList(
            BasicLayer(
                embed_dim * 2**i,
                depth,
                mix_size[i],
                downsample=i < len(depths) - 1,
                shift_dist=shift_dist,
                mlp_ratio=mlp_ratio,
                layer_scale_init=layer_scale_init,
                shift_form=shift_form,
            )
            for i, depth in enumerate(depths)
        )
        self.norm = nn.LayerNorm(self.num_features, eps=LN_EPS)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    @property
    def feature_info(self) -> list[dict]:
        """Per stage, what :meth:`forward_stages` returns (:func:`pyramid_feature_info`)."""
        return pyramid_feature_info("layers", self.dims, self.patch_embed.proj.stride[0])

    def forward_stages(self, x: torch.Tensor, stages: int | None = None) -> list[torch.Tensor]:
        """The output of each stage's blocks, before the next stage's patch embed: N,C,H,W at strides
        4, 8, 16, 32 (the feature maps a detection or segmentation head takes). ``stages``: stop after
        that many (the later ones are not computed)."""
        x = self.patch_embed(x)
        found = []
        for layer in self.layers[: len(self.layers) if stages is None else stages]:
            feature, x = layer(x, True)  # through the stage module: its node scope names the stage
            found.append(feature)
        return found

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean((2, 3)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# Checkpoint adaptation: none needed. Parameter names above are the official ones, so a released
# checkpoint's state dict (under "model") loads strictly as it is; see msmlp.models.checkpoint.


FAMILY = register_family(
    FamilySpec(
        name="msmlp",
        blocks=(
            BlockSpec(
                MixShiftBlock,
                groups={"mix": ("dwconv_lr", "dwconv_td"), "mlp": ("norm", "pwconv1", "act", "pwconv2")},
                own="mix",  # the rolls, the sum of the two directions and the residual
                layer_scales=("gamma",),
            ),
        ),
        fp32_norms=(ChannelLayerNorm, nn.LayerNorm),  # channels-first ChannelLayerNorm is written out
        shift_forms=SHIFT_FORMS,
        plugin_shifts=("group_roll",),
        classifier="head",
        input_stride=32,  # 4x4 patch embed, then three 2x2 stride-2 patch embeds
    )
)


def _cfg(**kw) -> DeployConfig:
    return DeployConfig(family=FAMILY.name, paper=PAPER, interpolation="bicubic", crop_pct=0.875, **kw)


def _build(shift_form: str = "sliced", **kw) -> MSMLP:
    return MSMLP(shift_form=shift_form, **kw)


@register_model(_cfg())
def msmlp_tiny(**kw) -> MSMLP:
    """MS-MLP-Tiny: C=96, depths 3-3-9-3 (28M params)."""
    return _build(**{"embed_dim": 96, "depths": (3, 3, 9, 3), **kw})


@register_model(_cfg())
def msmlp_small(**kw) -> MSMLP:
    """MS-MLP-Small: C=96, depths 3-3-27-3 (50M params)."""
    return _build(**{"embed_dim": 96, "depths": (3, 3, 27, 3), **kw})


@register_model(_cfg())
def msmlp_base(**kw) -> MSMLP:
    """MS-MLP-Base: C=128, depths 3-3-27-3 (88M params)."""
    return _build(**{"embed_dim": 128, "depths": (3, 3, 27, 3), **kw})


@register_model(_cfg(input_size=(3, 64, 64), extra={"test_config": True}))
def msmlp_micro(**kw) -> MSMLP:
    """A small MS-MLP for fast tests: same block structure, C=20 (group sizes 4 each), one block per
    stage, 64x64 input. Not a paper model."""
    return _build(**{"embed_dim": 20, "depths": (1, 1, 1, 1), **kw})


def set_channels_first(model: nn.Module, channels_first: bool) -> nn.Module:
    """Switch every channel LayerNorm and pointwise Linear in ``model`` between the channels-first
    deployment layout and the official channels-last one (module docstring), in place; the shifts keep
    their form. For benchmarks and tests that compare the two layouts on the same weights."""
    for module in model.modules():
        if isinstance(module, (ChannelLayerNorm, PointwiseLinear)):
            module.channels_first = channels_first
    return model
