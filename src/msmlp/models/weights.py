"""Weights in which every block contributes, for parity tests and verification.

Freshly initialised MS-MLP blocks carry layer-scale gamma = 1e-6, so each block is almost the identity
and a parity check on them proves nothing about the blocks. :func:`make_contributing` redraws the
parameters that keep blocks inert (the layer scales the family declares, LayerNorm affine, biases) so
that every block changes its input by a visible amount; :func:`block_contributions` measures that on
the residual blocks the family declares (:class:`msmlp.models.family.FamilySpec`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from msmlp.log import logger
from msmlp.models.config import DeployConfig
from msmlp.models.family import FamilyLayout, FamilySpec, family_layout
from msmlp.models.registry import model_family


def layout_of(model: nn.Module, family: FamilySpec | None = None) -> FamilyLayout:
    """The family layout of ``model``: from ``family`` if given, else from the family it was built in."""
    return family_layout(model, family if family is not None else model_family(model))


@torch.no_grad()
def make_contributing(
    model: nn.Module,
    seed: int = 0,
    gamma: tuple[float, float] = (0.1, 1.0),
    *,
    family: FamilySpec | None = None,
) -> nn.Module:
    """Redraw layer scales in ``gamma``, LayerNorm affine near (1, 0), small biases and unit-gain weights.

    Deterministic for a given ``seed``. The result is not a trained model, but its blocks all matter.
    The layer scales are those ``family`` (default: the model's own family) declares.
    """
    g = torch.Generator().manual_seed(seed)
    layer_scales = set(layout_of(model, family).layer_scales)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(t.shape, generator=g, dtype=torch.float32).mul_(hi - lo).add_(lo).to(t.dtype)

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name in layer_scales:
            p.copy_(uniform(p, *gamma))
        elif leaf == "bias":
            p.copy_(uniform(p, -0.05, 0.05))
        elif leaf == "weight" and p.ndim == 1:  # LayerNorm scale
            p.copy_(uniform(p, 0.8, 1.2))
        elif leaf == "weight":  # Linear / conv: unit-gain scale instead of the small training init
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g).mul_(fan_in**-0.5).to(p.dtype))
    model.weights_info = {"source": "synthetic", "seed": seed}
    return model


def load_for_deploy(
    name: str,
    weights: str | Path | None = None,
    seed: int = 0,
    *,
    quiet: bool = False,
    config: DeployConfig | None = None,
) -> nn.Module:
    """The registered model in eval mode with its checkpoint, or with synthetic weights in which every
    block contributes. The one place msmlp decides what "no --weights" means.

    The head is as wide as the checkpoint's classifier (a fine-tuned checkpoint keeps its own classes);
    ``config`` (from :func:`msmlp.models.variant.deploy_variant`) sets the class count, input size and
    class names instead, and the checkpoint must then fit it. The checkpoint loads strictly either way.
    The module carries ``deploy_config`` and ``weights_info`` (``{"source": "checkpoint", "path",
    "sha256"}`` or ``{"source": "synthetic", "seed"}``).
    """
    from msmlp.fileio import file_sha256
    from msmlp.models.checkpoint import check_state_dict, read_state_dict
    from msmlp.models.registry import create_model, get_config
    from msmlp.models.variant import resolve_classes

    path = Path(weights).resolve() if weights is not None else None
    state = read_state_dict(path) if path is not None else None
    classes = config.num_classes if config is not None else resolve_classes(name, state, None)
    overrides = {"num_classes": classes} if classes != get_config(name).num_classes else {}
    model = create_model(name, **overrides)
    if config is not None:
        model.deploy_config = config
    if state is not None:
        check_state_dict(model, state, source=f"checkpoint {str(path)!r}")
        model.load_state_dict(state, strict=True)
        model.weights_info = {"source": "checkpoint", "path": str(path), "sha256": file_sha256(path)}
        return model.eval()
    model = make_contributing(model, seed=seed).eval()
    if not quiet:
        logger.warning(
            "no --weights given: %s has synthetic weights (seed %d) in which every block contributes; "
            "graphs, parity and timings are real, predicted classes are meaningless",
            name,
            seed,
        )
    return model


def residual_blocks(model: nn.Module, family: FamilySpec | None = None) -> list[tuple[str, nn.Module]]:
    """The residual blocks the model's family declares, by module path."""
    modules = dict(model.named_modules())
    return [(path, modules[path]) for path in layout_of(model, family).blocks]


@torch.no_grad()
def block_contributions(
    model: nn.Module, x: torch.Tensor, *, family: FamilySpec | None = None
) -> dict[str, float]:
    """For each residual block, ||block(x) - x|| / ||x|| on the activations that reach it."""
    ratios: dict[str, float] = {}
    hooks = []
    for name, block in residual_blocks(model, family):

        def hook(mod: nn.Module, args: tuple[torch.Tensor], out: torch.Tensor, name: str = name) -> None:
            ratios[name] = float((out - args[0]).norm() / args[0].norm().clamp_min(1e-12))

        hooks.append(block.register_forward_hook(hook))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return ratios
