"""Shared fixtures: the real photographs msmlp ships (the same five as ../shared/images), models with
contributing weights, the installed command line, and skips for TensorRT / CUDA where they are absent."""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on 2 shared cores a spinning pool in one library
# starves the other (eager PyTorch went from ~175 ms to over a second beside ONNX Runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import msmlp
from msmlp.models.weights import make_contributing

ROOT = Path(__file__).resolve().parents[1]
IMAGES = (
    ROOT / "src" / "msmlp" / "data" / "images"
)  # packaged photos: the tests need nothing outside the repo
MICRO_MODELS = msmlp.list_models(test=True)
FULL_MODELS = msmlp.list_models(test=False)


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


class CLI:
    """Run ``msmlp-export ...`` or ``msmlp ...`` as installed (console scripts beside this Python)."""

    bin = Path(sys.executable).parent

    def __call__(self, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        program, *rest = (str(a) for a in args)
        script = self.bin / program
        if script.exists():
            command = [str(script), *rest]
        else:
            func = "export_main" if program == "msmlp-export" else "main"
            code = f"import sys; from msmlp.cli import {func}; sys.argv[0] = {program!r}; sys.exit({func}(sys.argv[1:]))"
            command = [sys.executable, "-c", code, *rest]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    @staticmethod
    def assert_one_line_error(
        result: subprocess.CompletedProcess[str], *fragments: str, code: int = 2
    ) -> None:
        """Exit ``code``, exactly one non-empty line on stderr holding every fragment, no traceback."""
        informational = ("no --weights", "backend auto:")  # progress lines that may precede the error
        lines = [
            line for line in result.stderr.splitlines() if line.strip() and not line.startswith(informational)
        ]
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr
        assert len(lines) == 1, result.stderr
        for fragment in fragments:
            assert fragment in lines[0], lines[0]


@pytest.fixture(scope="session")
def cli() -> CLI:
    return CLI()
