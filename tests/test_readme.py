"""The README's commands are the ones CI runs, and the commands it documents exist."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_documented_commands_exist():
    text = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`msmlp ([a-z-]+)", text))
    assert documented, "README documents no msmlp sub-commands"
    assert documented <= set(COMMANDS), documented - set(COMMANDS)
