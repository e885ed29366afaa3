"""The Python API a service embeds: ``msmlp.export(...)`` and ``msmlp.load(...)``.

Same behaviour as the CLI (same validation, same verification, same backend choice), without argparse::

    import msmlp
    result = msmlp.export("s2mlpv2_small", fp16=True)            # -> ExportResult (paths, reports)
    predictor = msmlp.load(result.out / "model.onnx")             # fastest verified CPU backend
    predictor.predict(["photo.jpg"])[0][0].label                  # top-5 per image
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msmlp.artifacts import PLAN_SUFFIXES
from msmlp.data.labels import Prediction, topk
from msmlp.data.transforms import load_image, preprocess
from msmlp.errors import InputError
from msmlp.extras import require_extra
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

    def logits(self, array: np.ndarray) -> np.ndarray:
        """N,C,H,W float32 (already preprocessed) -> N,classes logits, in chunks the backend accepts."""
        return run_in_batches(self.backend, np.asarray(array, dtype=np.float32), MAX_CHUNK)

    def predict(self, images: Sequence[str | Path | bytes | Any], k: int = 5) -> list[list[Prediction]]:
        """Image files, bytes or PIL images -> the top-``k`` classes of each, named by the model's own
        labels (recorded at export with ``--labels``) or ImageNet's."""
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
