"""Imports go one way, in the order of LAYERS: errors/log/fileio/lazy/optionspec -> models -> plugins -> data ->
artifacts/manifest -> exporters -> runtime -> verify/diagnose -> pipeline -> serve/bench -> api ->
commands/cli.

Every module of the package is parsed (not imported). Each ``msmlp.*`` import it makes, at module level
or inside a function, must go to the same layer or a lower one; between peers (two names of one layer)
only the directions in PEER_IMPORTS are allowed; and no modules import each other in a cycle of any
length (imports inside functions count, ``if TYPE_CHECKING:`` imports do not: they never run).
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
    "hostcpu": 0,
    "lazy": 0,  # PEP 562 re-exports: standard library only
    "optionspec": 0,  # option declarations and value parsers: standard library only
    "features": 0,  # what a feature export outputs and at which sizes: standard library only
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
    "evaluate": 7,
    "pipeline": 8,
    "serve": 9,
    "bench": 9,
    "api": 10,
    "commands": 11,
    "cli": 11,
    "__init__": 0,  # the package root only re-exports lazily, by name
}

# Peers (one layer) are independent, except in these directions (importer, imported): the reverse, or any
# pair not listed, is refused. serve and bench are independent (bench reaches a service over HTTP only).
PEER_IMPORTS: set[tuple[str, str]] = {
    ("__init__", "errors"),  # the package root re-exports the error classes
    ("__init__", "lazy"),  # ... and loads its other names on first use
    ("optionspec", "errors"),  # a bad option value is an InputError
    ("features", "errors"),  # a size outside the profile is an InputError
    ("features", "optionspec"),  # a profile's sizes parse as --input-size does
    ("hostcpu", "errors"),  # an unknown MSMLP_CPU_MASK name is an InputError
    ("extras", "errors"),  # a missing extra is a MissingDependencyError
    ("artifacts", "onnxproto"),  # an artefact's description is read from its ONNX header without onnx
    ("manifest", "artifacts"),  # the writer of model.json reuses its reader's names
    ("diagnose", "verify"),  # diagnosis builds on verification's comparison
    ("evaluate", "diagnose"),  # eval takes its candidates the way compare-layers does
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


def msmlp_imports(path: Path, module: str, *, type_checking: bool = True) -> list[tuple[int, str]]:
    """(line, imported module) for each ``msmlp`` import; ``from msmlp.a import b`` names ``msmlp.a.b``
    when that is a module. ``type_checking=False`` leaves out imports under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    skipped = set() if type_checking else _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "msmlp"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == "msmlp":
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULE_NAMES]
                found += [(node.lineno, t) for t in subs or [target]]
    return found


def _type_checking_nodes(tree: ast.AST) -> set[ast.AST]:
    """Every node inside an ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) body."""
    nodes: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.body:
                nodes.update(ast.walk(child))
    return nodes


def import_graph(found: list[tuple[str, Path]]) -> dict[str, set[str]]:
    """module -> the modules it imports when it runs (TYPE_CHECKING imports left out)."""
    names = {m for m, _ in found}
    graph: dict[str, set[str]] = {}
    for module, path in found:
        targets = {t for _, t in msmlp_imports(path, module, type_checking=False)}
        graph[module] = {t for t in targets if t in names}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm): each one is a cycle, however long."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


MODULE_NAMES = {m for m, _ in modules()}


def wrong_way_imports(path: Path, module: str) -> list[str]:
    """The imports of ``module`` that go to a higher layer, or to a peer not allowed by PEER_IMPORTS."""
    own_name, own = layer_of(module)
    wrong = []
    for line, target in msmlp_imports(path, module):
        if target == "msmlp":
            continue  # `import msmlp` for the lazy public names is only used by higher layers' callers
        name, rank = layer_of(target)
        if rank > own:
            wrong.append(f"line {line}: {target} ({name}, layer {rank})")
        elif rank == own and name != own_name and (own_name, name) not in PEER_IMPORTS:
            wrong.append(f"line {line}: {target} (peer {name}; PEER_IMPORTS has no {own_name} -> {name})")
    return wrong


def test_every_module_has_a_layer():
    assert {layer_of(m)[0] for m, _ in modules()} <= set(LAYERS)


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_no_upward_import(module, path):
    own_name, own = layer_of(module)
    wrong = wrong_way_imports(path, module)
    assert not wrong, f"{module} (layer {own_name}={own}) imports the wrong way: " + "; ".join(wrong)


def test_peer_imports_go_one_way():
    """A peer pair allowed both ways would be a cycle between packages; each pair names real peers."""
    for importer, imported in PEER_IMPORTS:
        assert LAYERS[importer] == LAYERS[imported], (importer, imported)
        assert (imported, importer) not in PEER_IMPORTS, (importer, imported)


def test_no_import_cycle():
    found = cycles(import_graph(modules()))
    assert not found, "modules importing each other in a cycle: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_a_cycle_through_a_lazy_import_but_not_type_checking(tmp_path):
    """A three-module cycle closed by an import inside a function is found; one closed only under
    ``if TYPE_CHECKING:`` is not (that import never runs)."""
    files = {
        "a": "from msmlp.runtime import b\n",
        "b": "def f():\n    from msmlp.runtime.c import g\n",
        "c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from msmlp.runtime.d import x\n"
        "import msmlp.runtime.a\n",
        "d": "from msmlp.runtime.c import g\n",
    }
    found = []
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text, encoding="utf-8")
        found.append((f"msmlp.runtime.{name}", tmp_path / f"{name}.py"))
    MODULE_NAMES.update(m for m, _ in found)
    try:
        graph = import_graph(found)
    finally:
        MODULE_NAMES.difference_update(m for m, _ in found)
    assert cycles(graph) == [["msmlp.runtime.a", "msmlp.runtime.b", "msmlp.runtime.c"]]
    assert graph["msmlp.runtime.c"] == {"msmlp.runtime.a"}


def test_the_checker_refuses_a_peer_import_in_the_direction_not_allowed(tmp_path):
    """diagnose may import verify (PEER_IMPORTS); verify importing diagnose, or bench serve, is refused."""
    fake = tmp_path / "fake.py"
    fake.write_text("from msmlp.verify import compare\nimport msmlp.serve.app\n", encoding="utf-8")
    assert wrong_way_imports(fake, "msmlp.diagnose.fake") == ["line 2: msmlp.serve.app (serve, layer 9)"]
    assert wrong_way_imports(fake, "msmlp.bench.fake") == [
        "line 2: msmlp.serve.app (peer serve; PEER_IMPORTS has no bench -> serve)"
    ]
    fake.write_text("from msmlp.diagnose.compare import compare_layers\n", encoding="utf-8")
    assert wrong_way_imports(fake, "msmlp.verify.fake") == [
        "line 1: msmlp.diagnose.compare (peer diagnose; PEER_IMPORTS has no verify -> diagnose)"
    ]


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule can fail: a runtime module importing the export pipeline is caught."""
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from msmlp.pipeline import run_export\n", encoding="utf-8")
    assert wrong_way_imports(fake, "msmlp.runtime.fake") == ["line 2: msmlp.pipeline (pipeline, layer 8)"]


def test_no_file_is_over_the_size_limit():
    """A file over ~450 lines usually holds several jobs (STYLE.md)."""
    long = {m: n for m, p in modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450}
    assert not long, f"split these by job: {long}"
