"""A registered model's deploy config adapted to a fine-tuned checkpoint: its own class count (read from
the classifier its family declares), another input size where the family's stride allows it, and its
class names. Checked where it enters, one clear line per mistake, before anything is built or exported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch

from msmlp.errors import InputError
from msmlp.models.config import DeployConfig
from msmlp.models.registry import get_config, get_family


def checkpoint_classes(name: str, state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the checkpoint's ``<classifier>.weight`` (the family's declared classifier), or None
    when it holds none (a headless backbone: the strict load names what is missing)."""
    key = f"{get_family(get_config(name).family).classifier}.weight"
    weight = state_dict.get(key)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None


def resolve_classes(
    name: str, state_dict: Mapping[str, torch.Tensor] | None, num_classes: int | None, source: str = ""
) -> int:
    """The class count: the checkpoint's head, ``num_classes`` (which must then agree), or the registered one."""
    if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 1):
        raise InputError(f"--num-classes {num_classes!r} must be a positive integer")
    found = checkpoint_classes(name, state_dict) if state_dict is not None else None
    if found is not None and num_classes is not None and found != num_classes:
        key = f"{get_family(get_config(name).family).classifier}.weight"
        raise InputError(
            f"--num-classes {num_classes} disagrees with checkpoint {source or ''} whose {key} has {found} "
            f"rows; drop --num-classes (the checkpoint decides) or pass the matching checkpoint"
        )
    return found or num_classes or get_config(name).num_classes


def check_input_size(name: str, size: tuple[int, int]) -> tuple[int, int]:
    """An input size the family's architecture runs at: each side a multiple of its total stride."""
    config = get_config(name)
    family = get_family(config.family)
    stride = family.input_stride
    if tuple(size) == config.image_size:
        return config.image_size
    text = "x".join(map(str, size))
    if stride == 0:
        raise InputError(
            f"--input-size {text}: family {family.name!r} runs only at {name}'s own size "
            f"{'x'.join(map(str, config.image_size))}; drop --input-size"
        )
    if any(side < stride or side % stride for side in size):
        raise InputError(
            f"--input-size {text}: each side of a {family.name} model must be a positive multiple of its "
            f"total stride {stride} (e.g. {_near(size[0], stride)}); the token grids must divide evenly"
        )
    return int(size[0]), int(size[1])


def deploy_variant(
    name: str,
    *,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
    labels: Sequence[str] = (),
) -> DeployConfig:
    """``name``'s registered config with another class count, input size and class names (checked)."""
    config = get_config(name)
    classes = config.num_classes if num_classes is None else int(num_classes)
    labels = tuple(str(label) for label in labels)
    if labels and len(labels) != classes:
        raise InputError(
            f"--labels names {len(labels)} classes but the model has {classes} outputs; give one name "
            "per class, in index order"
        )
    h, w = check_input_size(name, input_size) if input_size is not None else config.image_size
    return replace(config, num_classes=classes, input_size=(config.input_size[0], h, w), labels=labels)


def _near(side: int, stride: int) -> int:
    return max(stride, round(side / stride) * stride)
