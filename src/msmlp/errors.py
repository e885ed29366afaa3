"""Errors the user sees, and one for our own bugs.

Every user-facing message says what failed, the value received, and what was expected or how to fix it.
The CLI catches :class:`MsmlpError`, prints its message on one line and exits with the class's code:

==== =====================================================================
code meaning
==== =====================================================================
0    success
1    internal error: a bug in msmlp (the traceback is written to a log file)
2    bad input or usage (:class:`InputError`, argparse)
3    verification failed: a parity tolerance broke (:class:`VerificationError`)
4    an optional dependency is missing (:class:`MissingDependencyError`)
5    export, conversion or engine failure (:class:`ExportError`, :class:`EngineError`)
6    the service could not start or a server could not be reached (:class:`ServiceError`)
130  interrupted (Ctrl-C); 143 terminated (SIGTERM); staged files are removed in both cases
==== =====================================================================
"""

from __future__ import annotations


class MsmlpError(Exception):
    """Root of every error a user can cause and fix (bad input, missing dependency, failed check)."""

    exit_code = 2


class ExportError(MsmlpError):
    """Export, graph check, precision conversion or engine build failed."""

    exit_code = 5


class EngineError(MsmlpError):
    """An engine or ONNX file cannot be used: corrupt, mismatched, or built for other hardware."""

    exit_code = 5


class InputError(MsmlpError):
    """A bad argument, image, shape or file given by the user."""


class VerificationError(MsmlpError):
    """A backend's output broke the parity tolerances against PyTorch FP32."""

    exit_code = 3


class MissingDependencyError(MsmlpError):
    """An optional library is needed for this step; the message names the install command."""

    exit_code = 4


class ServiceError(MsmlpError):
    """A service could not start (port busy, bad address) or a server could not be reached."""

    exit_code = 6


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
