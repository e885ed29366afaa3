"""Micro graphs for diagnosis tests: FP32 export, its INT8 (ModelOpt) and FP16 (AutoCast) versions,
calibrated and compared on real photographs (the first three calibrate, the last two are held out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import msmlp
from msmlp.data.transforms import augmented, load_image, preprocess
from msmlp.exporters.onnx import export_onnx


def views(paths: list[Path], name: str, count: int, seed: int = 0) -> np.ndarray:
    return preprocess(augmented([load_image(p) for p in paths], count, seed=seed), msmlp.get_config(name))


@pytest.fixture(scope="module")
def micro(tmp_path_factory, contributing, image_paths):
    """``micro(name)`` -> dict of paths (fp32, int8, fp16) and held-out inputs, built once per module."""
    from msmlp.exporters.precision import convert_fp16
    from msmlp.exporters.quantize import quantize_int8

    built: dict[str, dict] = {}

    def build(name: str) -> dict:
        if name not in built:
            folder = tmp_path_factory.mktemp(name)
            fp32 = export_onnx(contributing(name), folder / "model.onnx", config=msmlp.get_config(name))
            int8, fp16 = folder / "model.int8.onnx", folder / "model.fp16.onnx"
            quantize_int8(fp32, int8, views(image_paths[:3], name, 16))
            convert_fp16(fp32, fp16)
            built[name] = {
                "fp32": fp32,
                "int8": int8,
                "fp16": fp16,
                "held_out": views(image_paths[3:], name, 16),
            }
        return built[name]

    return build
