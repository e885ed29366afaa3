"""A backbone without its classifier: the chosen stages' feature maps, as timm's ``features_only``.

A family supports features when its model class has ``forward_stages(x, stages)`` (each stage's output,
N,C,H,W) and ``feature_info`` (per stage: ``module``, ``num_chs``, ``reduction``); both families here do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from msmlp.errors import InputError
from msmlp.features import FeatureOutput, output_name, parse_out_indices


def stage_outputs(
    model: nn.Module, out_indices: str | Sequence[int] | None = None
) -> tuple[FeatureOutput, ...]:
    """The described outputs of ``model``'s stages ``out_indices`` (all by default)."""
    info = getattr(model, "feature_info", None)
    if not callable(getattr(model, "forward_stages", None)) or not info:
        raise InputError(
            f"{type(model).__name__} declares no stage features (forward_stages and feature_info); "
            "export it as a classifier, without --features"
        )
    chosen = parse_out_indices(out_indices, len(info))
    return tuple(
        FeatureOutput(
            output_name(i), i, int(info[i]["num_chs"]), int(info[i]["reduction"]), str(info[i]["module"])
        )
        for i in chosen
    )


class FeatureBackbone(nn.Module):
    """``model``'s stage outputs ``out_indices`` as a tuple of N,C,H,W tensors; stages after the last
    chosen one are not run, and the classifier head is never run."""

    def __init__(self, model: nn.Module, out_indices: str | Sequence[int] | None = None) -> None:
        super().__init__()
        self.outputs = stage_outputs(model, out_indices)
        self.model = model
        self.stages = tuple(o.stage for o in self.outputs)

    @property
    def stride(self) -> int:
        """The total stride of the network (of its last stage): input sides must be multiples of it."""
        return int(self.model.feature_info[-1]["reduction"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        found = self.model.forward_stages(x, self.stages[-1] + 1)
        return tuple(found[i] for i in self.stages)
