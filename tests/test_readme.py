"""The README's commands are the ones CI runs, and the commands it documents exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msmlp.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def _quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Set up, run, test", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    setup, main, test = _quickstart()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert f"python -m {setup}" in ci or setup in ci
    assert test in ci
    assert main.startswith("msmlp-export --model ")


def test_setup_installs_the_pinned_set_that_covers_pyproject():
    """The set-up command installs through the constraints file, which pins (==) every package that
    pyproject.toml asks for, the dev and kernels extras included."""
    tomllib = pytest.importorskip("tomllib")
    setup = _quickstart()[0]
    assert setup == 'pip install -c requirements/constraints.txt -e ".[dev]"'
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version and " " not in line, f"not pinned with ==: {line!r}"
            pins[_canonical(name)] = version
    assert pins["torch"] == "2.13.0"
    assert "msmlp" not in pins
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["dev"], *extras["kernels"]]
    names = {_canonical(re.split(r"[\[<>=!~;, ]", req, maxsplit=1)[0]) for req in wanted}
    assert names - {"msmlp"} <= set(pins), sorted(names - {"msmlp"} - set(pins))
    major, minor = (int(v) for v in pins["onnxruntime-gpu"].split(".")[:2])
    assert (major, minor) >= (1, 25), "ONNX Runtime before 1.25 miscomputes INT8 GEMMs on AMX CPUs"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def test_documented_commands_exist():
    text = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`msmlp ([a-z-]+)", text))
    assert documented, "README documents no msmlp sub-commands"
    assert documented <= set(COMMANDS), documented - set(COMMANDS)
