"""An independent build of the official MS-MLP architecture, from the facts in REFERENCE.md.

It uses the official forms (``torch.chunk`` + ``torch.roll``, Swin-style token-layout patch embed) and
the official parameter names, and is written separately from ``msmlp.models.msmlp`` so that a state
dict saved from it is a fair stand-in for a released ``*_ckpt_epoch299.pth`` file.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6


class OfficialPatchEmbed(nn.Module):
    def __init__(self, cin: int, cout: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, patch, patch)
        self.norm = nn.LayerNorm(cout, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        n, c, h, w = y.shape
        tokens = self.norm(y.flatten(2).transpose(1, 2))  # N, HW, C
        return tokens.view(n, h, w, c).permute(0, 3, 1, 2).contiguous()


class OfficialBlock(nn.Module):
    def __init__(self, dim: int, kernels: list[int]) -> None:
        super().__init__()
        sizes = [t.shape[0] for t in torch.chunk(torch.zeros(dim), 5)]
        self.dwconv_lr = nn.ModuleList(
            nn.Conv2d(s, s, k, padding=k // 2, groups=s) for s, k in zip(sizes, kernels)
        )
        self.dwconv_td = nn.ModuleList(
            nn.Conv2d(s, s, k, padding=k // 2, groups=s) for s, k in zip(sizes, kernels)
        )
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.chunk(x, 5, 1)
        dists = (-2, -1, 0, 1, 2)
        lr = torch.cat(
            [self.dwconv_lr[i](torch.roll(c, d, 3)) for i, (c, d) in enumerate(zip(chunks, dists))], 1
        )
        td = torch.cat(
            [self.dwconv_td[i](torch.roll(c, d, 2)) for i, (c, d) in enumerate(zip(chunks, dists))], 1
        )
        y = (lr + td).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class OfficialLayer(nn.Module):
    def __init__(self, dim: int, depth: int, kernels: list[int], last: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(OfficialBlock(dim, kernels) for _ in range(depth))
        self.downsample = None if last else OfficialPatchEmbed(dim, 2 * dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x if self.downsample is None else self.downsample(x)


class OfficialMSMLP(nn.Module):
    MIX = [[1, 1, 3, 5, 7], [1, 3, 3, 5, 7], [1, 5, 5, 5, 7], [1, 7, 7, 7, 7]]

    def __init__(self, embed_dim: int, depths: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.patch_embed = OfficialPatchEmbed(3, embed_dim, 4)
        self.layers = nn.ModuleList(
            OfficialLayer(embed_dim * 2**i, d, self.MIX[i], i == len(depths) - 1)
            for i, d in enumerate(depths)
        )
        feats = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(feats, eps=EPS)
        self.head = nn.Linear(feats, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(self.norm(x))
