"""The serving install, tested: these tests run in a venv with only ``msmlp[serve]`` (and pytest), on a
graph exported by the full environment (``MSMLP_SLIM_EXPORT``: an msmlp-export output folder).

Self-contained on purpose (run with ``--confcutdir tests/slim``): ``tests/conftest.py`` imports torch.
In the full environment, without the variable, the folder is exported once per session instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

IMAGES = Path(__file__).resolve().parents[2] / "src" / "msmlp" / "data" / "images"
MODEL = "s2mlpv2_micro"


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An msmlp-export folder holding model.onnx and model.json."""
    given = os.environ.get("MSMLP_SLIM_EXPORT")
    if given:
        folder = Path(given)
        assert (folder / "model.onnx").is_file() and (folder / "model.json").is_file(), folder
        return folder
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        pytest.skip("MSMLP_SLIM_EXPORT is not set and this install cannot export (no [export] extra)")
    folder = tmp_path_factory.mktemp("slim") / MODEL
    code = "import sys; from msmlp.cli import export_main; sys.exit(export_main(sys.argv[1:]))"
    subprocess.run(
        [sys.executable, "-c", code, "--model", MODEL, "--out", str(folder)], check=True, capture_output=True
    )
    return folder


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    return sorted(IMAGES.glob("*.jpg"))
