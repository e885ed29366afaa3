"""Labelled sets made from the packaged photographs (crops and flips saved as JPEG files) and micro models
exported once per module: a 3-class head (FP32 and FP16 graphs) and the 1000-class ImageNet head."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import msmlp
from msmlp.data.transforms import augmented, load_image
from msmlp.exporters.onnx import export_onnx

CLASSES = ("astronaut", "coffee", "rocket")  # one photograph per class
VIEWS = 4  # images per class: the photo, then random crops and flips


def write_views(photo: Path, folder: Path, count: int = VIEWS, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, view in enumerate(augmented([load_image(photo)], count, seed=seed)):
        path = folder / f"{photo.stem}_{i}.jpg"
        view.resize((max(64, view.width // 4), max(64, view.height // 4))).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def photos(image_paths) -> dict[str, Path]:
    return {p.stem: p for p in image_paths}


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory, photos) -> Path:
    """``root/<class>/<photo>_<i>.jpg``: 3 classes x 4 images."""
    root = tmp_path_factory.mktemp("imagefolder")
    for name in CLASSES:
        write_views(photos[name], root / name)
    return root


@pytest.fixture(scope="module")
def micro3(tmp_path_factory, contributing) -> dict[str, Path]:
    """``msmlp_micro`` with a 3-class head: FP32 and FP16 ONNX graphs."""
    from msmlp.exporters.precision import convert_fp16

    folder = tmp_path_factory.mktemp("micro3")
    config = dataclasses.replace(msmlp.get_config("msmlp_micro"), num_classes=3)
    fp32 = export_onnx(contributing("msmlp_micro", num_classes=3), folder / "model.onnx", config=config)
    convert_fp16(fp32, folder / "model.fp16.onnx")
    return {"fp32": fp32, "fp16": folder / "model.fp16.onnx"}


@pytest.fixture(scope="module")
def micro1000(tmp_path_factory, contributing) -> Path:
    """``s2mlpv2_micro`` with the ImageNet head, FP32."""
    folder = tmp_path_factory.mktemp("micro1000")
    return export_onnx(
        contributing("s2mlpv2_micro"), folder / "model.onnx", config=msmlp.get_config("s2mlpv2_micro")
    )


def unreadable(path: Path) -> Path:
    path.write_text("not an image")
    return path
