"""The Python API a service embeds: ``msmlp.export(...)`` and ``msmlp.load(...)``.

Same behaviour as the CLI (same validation, same verification, same backend choice), without argparse::

    import msmlp
    result = msmlp.export("s2mlpv2_small", fp16=True)            # -> ExportResult (paths, reports)
    predictor = msmlp.load(result.out / "model.onnx")             # fastest verified CPU backend
    predictor.predict(["photo.jpg"])[0][0].label                  # top-5 per image
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msmlp.artifacts import PLAN_SUFFIXES
from msmlp.data.dense import dense_array
from msmlp.data.labels import Prediction, topk
from msmlp.data.transforms import load_image, preprocess
from msmlp.errors import InputError
from msmlp.extras import require_extra
from msmlp.features import FeatureLayout, Placement, placement
from msmlp.models.config import DeployConfig
from msmlp.optionspec import build, keyword_signature
from msmlp.pipeline.options import ExportOptions
from msmlp.runtime import open_backend
from msmlp.runtime.base import Backend, run_in_batches

if TYPE_CHECKING:  # the export pipeline imports torch and onnx: loaded by export() alone
    from msmlp.pipeline import ExportResult

MAX_CHUNK = 32


def export(model: str, **options: Any) -> ExportResult:
    """Export, check and verify ``model`` like ``msmlp-export``. The keywords are the
    :class:`ExportOptions` fields, declared once for the CLI and here: same names, defaults, conversions
    (a text path or ``batch="1,8,64"`` is read as the CLI reads it) and checks."""
    require_extra("export", "msmlp.export()")
    from msmlp.pipeline.run import run_export

    return run_export(build(ExportOptions, model=model, **options))


export.__signature__ = keyword_signature(ExportOptions, positional=("model",))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Features:
    """One image's feature maps (output name -> C,h,w float32) and how it was placed in the input."""

    maps: dict[str, np.ndarray]
    placement: Placement


class Predictor:
    """A loaded backend with its preprocessing: images in, top-k classes (or logits) out."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend.load()
        config = backend.info.config
        if config is None:
            raise InputError(
                "the file does not record its model or preprocessing (no model.json); load it by model name "
                "or export it with msmlp-export"
            )
        self.config: DeployConfig = config

    @property
    def info(self) -> Any:
        return self.backend.info

    @property
    def feature_layout(self) -> FeatureLayout | None:
        """The outputs and sizes of a feature export (``msmlp-export --features``); None for a classifier."""
        return self.backend.info.features

    def logits(self, array: np.ndarray) -> np.ndarray:
        """N,C,H,W float32 (already preprocessed) -> N,classes logits, in chunks the backend accepts."""
        self._classifier()
        return run_in_batches(self.backend, np.asarray(array, dtype=np.float32), MAX_CHUNK)

    def feature_maps(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """N,3,H,W float32 (preprocessed; H, W within the graph's sizes) -> every named output, N,C,h,w."""
        layout = self._layout()
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 4:
            raise InputError(f"feature_maps takes an N,3,H,W array, got shape {array.shape}")
        layout.check_size(int(array.shape[2]), int(array.shape[3]), self._where())
        return run_in_batches(self.backend, array, MAX_CHUNK, outputs=layout.names)

    def features(
        self,
        images: Sequence[str | Path | bytes | Any],
        *,
        fit: str = "pad",
        size: tuple[int, int] | None = None,
    ) -> list[Features]:
        """Image files, bytes or PIL images -> each one's feature maps and where the image sits in the input.

        ``fit="pad"`` keeps each image's scale (shrunk only past the largest size the graph takes) and pads
        the bottom and right up to the stride; ``fit="letterbox"`` scales into ``size`` (default: the
        profile's opt size). No centre crop: dense tasks need the whole picture. Images that end up at the
        same input size run as one batch.
        """
        layout = self._layout()
        pictures = [load_image(im) if isinstance(im, (str, Path, bytes)) else im for im in images]
        if not pictures:
            raise InputError("no images given")
        places = [placement((im.height, im.width), layout, fit, size) for im in pictures]
        found: list[Features | None] = [None] * len(pictures)
        for input_size in dict.fromkeys(p.input for p in places):
            index = [i for i, p in enumerate(places) if p.input == input_size]
            batch = np.stack([dense_array(pictures[i], places[i], self.config) for i in index])
            maps = self.feature_maps(batch)
            for row, i in enumerate(index):
                found[i] = Features({n: m[row] for n, m in maps.items()}, places[i])
        return found  # type: ignore[return-value]

    def _classifier(self) -> None:
        """The one clear error for asking a feature export for classes or logits."""
        if self.feature_layout is not None:
            raise InputError(
                f"{self._where()} is a feature export (outputs {', '.join(self.feature_layout.names)}), not a "
                "classifier; call .features(images) or .feature_maps(array)"
            )

    def _layout(self) -> FeatureLayout:
        layout = self.feature_layout
        if layout is None:
            raise InputError(
                f"{self._where()} is a classifier graph; export the backbone with msmlp-export --features"
            )
        return layout

    def _where(self) -> str:
        artifact = self.backend.info.artifact
        return artifact.path.name if artifact is not None else "the model"

    def predict(self, images: Sequence[str | Path | bytes | Any], k: int = 5) -> list[list[Prediction]]:
        """Image files, bytes or PIL images -> the top-``k`` classes of each, named by the model's own
        labels (recorded at export with ``--labels``) or ImageNet's."""
        self._classifier()
        pictures = [load_image(im) if isinstance(im, (str, Path, bytes)) else im for im in images]
        return topk(self.logits(preprocess(pictures, self.config)), k, self.config.labels)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load(
    source: str | Path,
    *,
    backend: str = "auto",
    weights: str | Path | None = None,
    threads: int | None = None,
    precision: str | None = None,
) -> Predictor:
    """A registered model name (PyTorch), an exported ONNX file (the fastest verified CPU backend unless
    ``backend`` says otherwise) or a TensorRT plan."""
    text = str(source)
    path = Path(text)
    if path.suffix.lower() == ".onnx":
        opened = open_backend(onnx=path, backend=backend, threads=threads, precision=precision)
    elif path.suffix.lower() in PLAN_SUFFIXES:
        opened = open_backend(engine=path, backend=backend)
    else:
        opened = open_backend(model=text, weights=weights, backend=backend, precision=precision)
    return Predictor(opened)
