"""The deployment config a registered model carries: input size, normalisation, classes, batch limits.

Kept free of torch so that reading an artefact's metadata (``msmlp.artifacts``) stays cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DeployConfig:
    """What a deployment needs to know about a model's input and output.

    An exported graph has one spatial size (a registered model's, or another its family allows, see
    :mod:`msmlp.models.variant`); only the batch axis may vary, within ``min_batch``..``max_batch``.
    ``labels``: the class names in index order, empty for the default (ImageNet's names for 1000
    classes, else ``class <i>``).
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    num_classes: int = 1000
    min_batch: int = 1
    max_batch: int = 64
    input_name: str = "input"
    output_name: str = "logits"
    family: str = ""
    paper: str = ""
    labels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[2]

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, *self.input_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployConfig:
        """Rebuild from :meth:`to_dict`'s output; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        for key in ("input_size", "mean", "std", "labels"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)
