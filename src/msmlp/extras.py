"""The install profiles (pyproject extras) and the one error a step raises when its extra is missing.

The core install runs exported graphs on OpenVINO with numpy and Pillow; each extra adds what one job
needs (docs/install.md says why the profiles are cut this way). A step that needs an extra checks for
it where it starts, so the user reads one line naming ``pip install "msmlp[...]"`` (exit code 4), not
an ImportError from deep inside.
"""

from __future__ import annotations

import importlib.util

from msmlp.errors import MissingDependencyError

# The modules whose absence means the extra is not installed (checked with find_spec: nothing imported).
EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("torch", "onnx", "modelopt", "onnxslim", "onnx_graphsurgeon", "polygraphy", "onnxruntime"),
    "serve": ("fastapi", "uvicorn", "multipart", "prometheus_client"),
    "onnxruntime": ("onnxruntime",),
    "tensorrt": ("tensorrt", "cuda"),
    "kernels": ("triton",),
    "plot": ("matplotlib",),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require_extra(extra: str, purpose: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingDependencyError` unless every module of ``extra`` (or just ``modules``
    of it, where the step needs only those) is importable."""
    missing = (
        [m for m in modules if importlib.util.find_spec(m) is None] if modules else missing_modules(extra)
    )
    if missing:
        raise MissingDependencyError(
            f"{purpose} needs the [{extra}] extra ({', '.join(missing)} not installed); "
            f'install it with: pip install "msmlp[{extra}]"'
        )


def extra_of(module: str | None) -> str | None:
    """The extra that provides ``module`` (a top-level name such as ``torch``), if any."""
    top = (module or "").split(".")[0]
    return next((extra for extra, names in EXTRAS.items() if top in names), None)
