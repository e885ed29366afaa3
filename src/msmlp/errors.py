"""Errors the user sees, and one for our own bugs.

Every user-facing message says what failed, the value received, and what was expected or how to fix it.
The CLI catches :class:`MsmlpError`, prints its message on one line and exits non-zero.
"""

from __future__ import annotations


class MsmlpError(Exception):
    """Root of every error a user can cause and fix (bad input, missing dependency, failed check)."""

    exit_code = 2


class ExportError(MsmlpError):
    """Export, graph check, precision conversion or engine build failed."""


class EngineError(MsmlpError):
    """An engine or ONNX file cannot be used: corrupt, mismatched, or built for other hardware."""


class InputError(MsmlpError):
    """A bad argument, image, shape or file given by the user."""


class VerificationError(MsmlpError):
    """A backend's output broke the parity tolerances against PyTorch FP32."""

    exit_code = 3


class MissingDependencyError(MsmlpError):
    """An optional library is needed for this step; the message names the install command."""


class OverloadedError(MsmlpError):
    """The request queue is full; retry later or raise ``max_queue``."""


class InternalError(RuntimeError):
    """A bug in msmlp itself, not something the user did. Not a subclass of MsmlpError on purpose."""


def require(module: str, purpose: str, install: str):
    """Import an optional dependency, or raise one clear error naming the command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised where the module is absent
        raise MissingDependencyError(
            f"{purpose} needs the Python module '{module}', which is not importable ({exc}); "
            f"install it with: {install}"
        ) from exc
