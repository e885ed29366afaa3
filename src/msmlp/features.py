"""Backbone feature exports: which stage outputs a graph has, at which sizes it runs, and the dense-task
preprocessing that feeds it. Free of torch: the runtime reads these from the graph's metadata.

A feature export (``msmlp-export --features``) has one named N,C,H,W output per chosen stage,
``stage<i>``, described like timm's ``feature_info`` (channels, stride, module). With ``--dynamic-size``
its H and W axes are dynamic within a :class:`SizeProfile` (min / opt / max, each side a multiple of the
network's total stride); without, it runs at one size. Dense tasks keep the whole picture: images are
resized (never centre-cropped) and padded at the bottom and right up to the stride, or letterboxed into
a size; the :class:`Placement` of each says what was done, so boxes and masks map back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from msmlp.errors import InputError
from msmlp.optionspec import parse_input_size

META_KEY = "features"  # graph metadata msmlp.features: FeatureLayout.to_dict() as JSON
OUTPUT_PREFIX = "stage"
BATCH_DIM, HEIGHT_DIM, WIDTH_DIM = "batch", "height", "width"  # the named axes of a feature graph
FIT_MODES = ("pad", "letterbox")


def output_name(stage: int) -> str:
    return f"{OUTPUT_PREFIX}{stage}"


@dataclass(frozen=True)
class FeatureOutput:
    """One named output: a stage's feature map, ``channels`` deep at 1/``stride`` of the input."""

    name: str
    stage: int
    channels: int
    stride: int
    module: str = ""

    def shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The N,C,H,W shape of this output for an input of ``height`` x ``width`` (multiples of the stride)."""
        return batch, self.channels, height // self.stride, width // self.stride


@dataclass(frozen=True)
class SizeProfile:
    """The input sizes a dynamic-size graph runs at: each side between ``min`` and ``max`` and a
    multiple of ``stride``; ``opt`` is the size runtimes tune for (TensorRT's opt shape)."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]
    stride: int

    def __post_init__(self) -> None:
        for label, (h, w) in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if h % self.stride or w % self.stride or h < self.stride or w < self.stride:
                raise InputError(
                    f"size profile {label} {h}x{w} is not a multiple of the network's total stride "
                    f"{self.stride} on each side; e.g. {_round_up(h, self.stride)}x{_round_up(w, self.stride)}"
                )
        if not all(lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max)):
            raise InputError(f"size profile {self.text()} is not ordered: each side needs MIN <= OPT <= MAX")

    @classmethod
    def parse(cls, text: str, stride: int, option: str = "--dynamic-size") -> SizeProfile:
        """``"224,512,1344"`` or ``"224x224,512x512,800x1344"``: MIN,OPT,MAX sizes."""
        parts = text.split(",")
        if len(parts) != 3:
            raise InputError(
                f"{option} {text!r} must be MIN,OPT,MAX sizes, each SIDE or HEIGHTxWIDTH, e.g. "
                f"{default_profile(stride).text()}"
            )
        lo, opt, hi = (parse_input_size(p, option) for p in parts)
        return cls(lo, opt, hi, stride)

    def text(self) -> str:
        return ",".join(f"{h}x{w}" for h, w in (self.min, self.opt, self.max))

    def sizes(self) -> list[tuple[int, int]]:
        """min, opt and max, each once: the sizes verification runs at."""
        return list(dict.fromkeys((self.min, self.opt, self.max)))

    def check(self, height: int, width: int, where: str = "the graph") -> None:
        """A clear error for an input size outside the profile or not a multiple of the stride."""
        if height % self.stride or width % self.stride:
            raise InputError(
                f"input {height}x{width} is not a multiple of the stride {self.stride} that {where} needs; "
                f"pad it to {_round_up(height, self.stride)}x{_round_up(width, self.stride)} "
                "(Predictor.features(images) pads images for you)"
            )
        if not (self.min[0] <= height <= self.max[0] and self.min[1] <= width <= self.max[1]):
            raise InputError(
                f"input {height}x{width} is outside the size profile of {where} "
                f"({self.min[0]}x{self.min[1]} to {self.max[0]}x{self.max[1]}); resize the image or "
                "re-export with a wider --dynamic-size MIN,OPT,MAX"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max), "stride": self.stride}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SizeProfile:
        pair = lambda v: (int(v[0]), int(v[1]))  # noqa: E731
        return cls(pair(data["min"]), pair(data["opt"]), pair(data["max"]), int(data["stride"]))


def _round_up(value: int, stride: int) -> int:
    return max(stride, -(-value // stride) * stride)


def default_profile(stride: int) -> SizeProfile:
    """224 (rounded up to the stride) to 1344 on a side, opt 512: classification to detection sizes."""
    lo, opt, hi = (_round_up(v, stride) for v in (224, 512, 1344))
    return SizeProfile((lo, lo), (opt, opt), (hi, hi), stride)


def parse_out_indices(text: str | Sequence[int] | None, stages: int) -> tuple[int, ...]:
    """``"1,2,3"`` (or a sequence; negative counts from the end) -> sorted distinct stage indices; all
    stages for ``None``."""
    if text is None:
        return tuple(range(stages))
    raw = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [int(v) for v in raw]
    except (TypeError, ValueError):
        raise InputError(f"--out-indices {text!r} must be stage numbers, e.g. 0,1,2") from None
    bad = [v for v in values if not -stages <= v < stages]
    if not values or bad:
        raise InputError(
            f"--out-indices {text!r}: this network has {stages} stages, numbered 0..{stages - 1}"
        )
    return tuple(sorted({v % stages for v in values}))


@dataclass(frozen=True)
class FeatureLayout:
    """What a feature graph outputs and at which input sizes it runs: a fixed ``size``, or ``profile``."""

    outputs: tuple[FeatureOutput, ...]
    stride: int  # the network's total stride: input sides must be multiples of it
    size: tuple[int, int] | None = None  # the fixed input size (no profile)
    profile: SizeProfile | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def dynamic(self) -> bool:
        return self.profile is not None

    def check_size(self, height: int, width: int, where: str = "the graph") -> None:
        if self.profile is not None:
            self.profile.check(height, width, where)
        elif self.size is not None and (height, width) != tuple(self.size):
            h, w = self.size
            raise InputError(
                f"input {height}x{width} does not match {where}, exported at {h}x{w} only; resize to it, or "
                "re-export with --dynamic-size"
            )

    def sizes(self) -> list[tuple[int, int]]:
        if self.profile is not None:
            return self.profile.sizes()
        return [tuple(self.size)] if self.size else []  # type: ignore[list-item]

    @property
    def opt_size(self) -> tuple[int, int]:
        """The size runtimes tune for and INT8 calibrates at: the profile's opt, or the one fixed size."""
        size = self.profile.opt if self.profile is not None else self.size
        if size is None:
            raise InputError("the feature layout records neither a size nor a size profile")
        return tuple(size)  # type: ignore[return-value]

    def input_dims(self) -> list[int | str]:
        """H and W of the input: the named axes ``height``/``width`` when dynamic, else the fixed size."""
        return [HEIGHT_DIM, WIDTH_DIM] if self.dynamic else list(self.opt_size)

    def output_dims(self, out: FeatureOutput) -> list[int | str]:
        """h and w of output ``out``: ``<name>_height``/``<name>_width`` when dynamic, else the size
        divided by its stride."""
        if self.dynamic:
            return [f"{out.name}_{HEIGHT_DIM}", f"{out.name}_{WIDTH_DIM}"]
        h, w = self.opt_size
        return [h // out.stride, w // out.stride]

    def to_dict(self) -> dict[str, Any]:
        return {
            "outputs": [asdict(o) for o in self.outputs],
            "stride": self.stride,
            "size": list(self.size) if self.size else None,
            "size_profile": self.profile.to_dict() if self.profile else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureLayout:
        outputs = tuple(
            FeatureOutput(
                str(o["name"]),
                int(o["stage"]),
                int(o["channels"]),
                int(o["stride"]),
                str(o.get("module", "")),
            )
            for o in data["outputs"]
        )
        size = data.get("size")
        profile = data.get("size_profile")
        return cls(
            outputs,
            int(data["stride"]),
            (int(size[0]), int(size[1])) if size else None,
            SizeProfile.from_dict(profile) if profile else None,
        )

    @classmethod
    def from_metadata(cls, text: str | None) -> FeatureLayout | None:
        """The layout recorded in a graph's ``msmlp.features`` metadata; None for a classifier graph."""
        if not text:
            return None
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, IndexError):
            raise InputError(
                "the graph's msmlp.features metadata is unreadable; re-export it with msmlp-export --features"
            ) from None


# ----------------------------------------------------------------------------- dense preprocessing


@dataclass(frozen=True)
class Placement:
    """How one image was placed in the network input: scaled by ``scale`` to ``resized`` (H, W), then
    padded at the bottom and right to ``input`` (H, W). A point (x, y) of the input is at
    (x / scale, y / scale) in the original."""

    original: tuple[int, int]
    resized: tuple[int, int]
    input: tuple[int, int]
    scale: float

    @property
    def padding(self) -> dict[str, int]:
        return {
            "top": 0,
            "left": 0,
            "bottom": self.input[0] - self.resized[0],
            "right": self.input[1] - self.resized[1],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": list(self.original),
            "resized": list(self.resized),
            "input": list(self.input),
            "scale": self.scale,
            "padding": self.padding,
        }


def placement(
    image_hw: tuple[int, int], layout: FeatureLayout, fit: str = "pad", size: tuple[int, int] | None = None
) -> Placement:
    """Where an image of ``image_hw`` goes in the input of ``layout``.

    ``fit="pad"``: keep the image's own scale (shrunk to fit the largest size the graph takes), then pad
    at the bottom and right up to the stride (and to the smallest size). ``fit="letterbox"``: scale it to fit ``size`` (default: the
    profile's opt size, or the fixed size) keeping its aspect, then pad to exactly ``size``. A fixed-size
    graph always letterboxes into its size.
    """
    if fit not in FIT_MODES:
        raise InputError(f"fit {fit!r} is not one of {', '.join(FIT_MODES)}")
    h, w = image_hw
    stride = layout.stride
    if layout.profile is None or fit == "letterbox":
        target = size or layout.opt_size
        layout.check_size(*target)
        scale = min(target[0] / h, target[1] / w)
        resized = (max(1, min(target[0], round(h * scale))), max(1, min(target[1], round(w * scale))))
        return Placement((h, w), resized, tuple(target), scale)  # type: ignore[arg-type]
    lo, hi = layout.profile.min, layout.profile.max
    scale = min(1.0, hi[0] / h, hi[1] / w)  # shrink what is larger than the largest size; never grow
    resized = (max(1, min(hi[0], round(h * scale))), max(1, min(hi[1], round(w * scale))))
    padded = (max(lo[0], _round_up(resized[0], stride)), max(lo[1], _round_up(resized[1], stride)))
    return Placement((h, w), resized, padded, scale)


__all__ = [
    "FIT_MODES",
    "FeatureLayout",
    "FeatureOutput",
    "Placement",
    "SizeProfile",
    "default_profile",
    "output_name",
    "parse_out_indices",
    "placement",
]
