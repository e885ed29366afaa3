"""Shared fixtures: the real photographs in ../shared/images, models with contributing weights, and
skips for TensorRT / CUDA where they are absent."""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on 2 shared cores a spinning pool in one library
# starves the other (eager PyTorch went from ~175 ms to over a second beside ONNX Runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib.util
from pathlib import Path

import pytest
import torch

import msmlp
from msmlp.models.weights import make_contributing

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "images"
MICRO_MODELS = ["msmlp_micro", "s2mlpv2_micro"]
FULL_MODELS = ["msmlp_tiny", "msmlp_small", "msmlp_base", "s2mlpv2_small", "s2mlpv2_medium"]


def _cuda_reason() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA GPU on this machine"


def _tensorrt_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'msmlp[tensorrt]' on a machine with an NVIDIA GPU)"
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # the bindings without the library fail to import
        return f"TensorRT is not importable: {exc}"
    return _cuda_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {"gpu": _cuda_reason(), "tensorrt": _tensorrt_reason()}
    for item in items:
        for marker, reason in reasons.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def image_paths() -> list[Path]:
    paths = sorted(IMAGES.glob("*.jpg"))
    assert len(paths) == 5, f"expected the five photographs in {IMAGES}"
    return paths


@pytest.fixture(scope="session")
def contributing():
    """Factory: ``contributing(name, seed=0, **overrides)`` gives a registered model in eval mode whose
    every block contributes (see msmlp.models.weights); fresh MS-MLP weights would make parity vacuous."""

    def build(name: str, seed: int = 0, **kw) -> torch.nn.Module:
        return make_contributing(msmlp.create_model(name, **kw), seed=seed).eval()

    return build


@pytest.fixture
def tmp_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out
