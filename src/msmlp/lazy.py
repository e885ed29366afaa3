"""Names a package re-exports but loads on first use (PEP 562), so importing the package, and building
``--help`` from its light modules, does not import torch, ONNX or a runtime."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps each name to its module."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(getattr(sys.modules[package], "__all__", names))

    return __getattr__, __dir__


def by_module(modules: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """The name -> module table :func:`lazy_exports` takes, written module -> names so that each module is
    named once."""
    return {name: module for module, names in modules.items() for name in names}
