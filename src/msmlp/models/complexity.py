"""Parameter and multiply-accumulate counts, measured by running the model under a FLOP counter."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """MACs for one image: ``torch.utils.flop_counter`` FLOPs / 2 (GEMMs and convolutions only).

    Runs on the meta device, so no real memory or compute is spent even for the large models.
    """
    meta = _to_meta(model)
    x = torch.empty((1, *input_size), device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(x)
    return counter.get_total_flops() // 2


def _to_meta(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model) if any(p.device.type != "meta" for p in model.parameters()) else model
    return clone.to("meta")


def complexity(model: nn.Module, input_size: tuple[int, int, int]) -> Complexity:
    return Complexity(count_params(model), count_macs(model, input_size))


def complexity_of(name: str) -> Complexity:
    """Parameters and MACs of a registered model, built directly on the meta device (no weights are
    allocated or initialised, so listing every model takes a second, not a quarter of a minute)."""
    from msmlp.models.registry import create_model, get_config

    with torch.device("meta"):
        model = create_model(name)
    return complexity(model, get_config(name).input_size)
