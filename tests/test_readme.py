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
    pyproject.toml asks for, in the core and in every extra (each install profile) but the GPU ones."""
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
    gpu_only = {"tensorrt", "cuda", "all"}  # resolved on a GPU machine: not in the pinned CPU set
    wanted = [
        *project["dependencies"],
        *(r for name, reqs in extras.items() if name not in gpu_only for r in reqs),
    ]
    names = {_canonical(re.split(r"[\[<>=!~;, ]", req, maxsplit=1)[0]) for req in wanted}
    assert names - {"msmlp"} <= set(pins), sorted(names - {"msmlp"} - set(pins))
    for ort in ("onnxruntime-gpu", "onnxruntime"):  # [export]'s and [onnxruntime]'s
        major, minor = (int(v) for v in pins[ort].split(".")[:2])
        assert (major, minor) >= (1, 25), "ONNX Runtime before 1.25 miscomputes INT8 GEMMs on AMX CPUs"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _pages() -> list[Path]:
    """The front page and the docs pages it links to."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _documented_commands(text: str) -> set[str]:
    """Sub-commands named as `msmlp NAME` in prose or at the start of a line of a shell block."""
    named = set(re.findall(r"`msmlp ([a-z-]+)", text))
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        named |= set(re.findall(r"^msmlp ([a-z-]+)", block, flags=re.M))
    return named


def test_documented_commands_exist():
    assert _documented_commands((ROOT / "README.md").read_text()), "README documents no msmlp sub-commands"
    for page in _pages():
        documented = _documented_commands(page.read_text(encoding="utf-8"))
        assert documented <= set(COMMANDS), (page.name, documented - set(COMMANDS))


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_pages_resolve():
    """Every relative link of the README and docs/ names a file that exists, and a heading in it."""
    checked = 0
    for page in _pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s) and other schemes are not checked here
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.is_file(), f"{page.name}: link {target!r} names no file"
            if anchor:
                body = linked.read_text(encoding="utf-8")
                anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", body, flags=re.M)}
                assert anchor in anchors, f"{page.name}: link {target!r} names no heading of {linked.name}"
            checked += 1
    assert checked >= 20, f"only {checked} links found; the README should link to the docs pages"


def test_readme_is_a_front_page():
    """The README stays short and links every docs page; the measurements live in docs/."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, len(text.splitlines())
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"index.md", "performance.md", "precision.md", "serving.md", "tensorrt.md", "design.md"} <= pages
    linked = set(re.findall(r"\(docs/([a-z]+\.md)", text))
    assert pages <= linked, sorted(pages - linked)
