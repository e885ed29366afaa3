"""Imports go one way: models -> data -> export -> runtime -> serve / bench / commands.

Every module of the package is parsed (not imported) and each ``msmlp.*`` import it makes, at module
level or inside a function, must go to the same layer or a lower one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "msmlp"

# Lower number = lower layer. A module may import its own layer and any lower one.
LAYERS: dict[str, int] = {
    "errors": 0,
    "log": 0,
    "extras": 0,
    "fileio": 0,
    "models": 1,
    "plugins": 2,
    "data": 3,
    "artifacts": 4,
    "onnxproto": 4,
    "manifest": 4,
    "exporters": 5,
    "runtime": 6,
    "verify": 7,
    "diagnose": 7,
    "pipeline": 8,
    "serve": 9,
    "bench": 9,
    "api": 10,
    "commands": 11,
    "cli": 11,
    "__init__": 0,  # the package root only re-exports lazily, by name
}


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in LAYERS:
        raise AssertionError(f"{module}: the top-level name {top!r} has no layer in tests/test_layering.py")
    return top, LAYERS[top]


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        found.append((name.removesuffix(".__init__"), path))
    return found


def msmlp_imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "msmlp"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == "msmlp":
                found.append((node.lineno, target))
    return found


def test_every_module_has_a_layer():
    assert {layer_of(m)[0] for m, _ in modules()} <= set(LAYERS)


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_no_upward_import(module, path):
    own_name, own = layer_of(module)
    upward = []
    for line, target in msmlp_imports(path, module):
        if target == "msmlp":
            continue  # `import msmlp` for the lazy public names is only used by higher layers' callers
        name, rank = layer_of(target)
        if rank > own:
            upward.append(f"line {line}: {target} ({name}, layer {rank})")
    assert not upward, f"{module} (layer {own_name}={own}) imports upward: " + "; ".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule can fail: a runtime module importing the export pipeline is caught."""
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from msmlp.pipeline import run_export\n", encoding="utf-8")
    imports = msmlp_imports(fake, "msmlp.runtime.fake")
    assert [layer_of(t)[1] for _, t in imports] == [LAYERS["pipeline"]] and LAYERS["pipeline"] > LAYERS[
        "runtime"
    ]


def test_no_file_is_over_the_size_limit():
    """A file over ~450 lines usually holds several jobs (STYLE.md)."""
    long = {m: n for m, p in modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450}
    assert not long, f"split these by job: {long}"
