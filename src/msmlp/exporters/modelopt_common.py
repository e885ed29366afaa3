"""What the FP16 and INT8 steps share about NVIDIA ModelOpt: its install command, its version for the
report, and keeping its console output off the user's terminal."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

from msmlp.log import logger

MODELOPT_INSTALL = "pip install 'nvidia-modelopt[onnx]'"


def modelopt_version() -> str:
    from importlib.metadata import version

    return version("nvidia-modelopt")


@contextlib.contextmanager
def modelopt_quiet() -> Iterator[None]:
    """Route ModelOpt's logging through ours and keep its console output off the user's terminal.

    ModelOpt installs its own stdout handlers (again on every ``quantize`` call), logs each node it
    keeps at INFO, and ONNX Runtime's entropy calibrator draws progress bars on stderr. That output is
    captured and logged at DEBUG; ModelOpt's records still reach the application's handlers at WARNING
    and above (DEBUG when msmlp is verbose), minus the known noise in :class:`_DropNoise`.
    """
    import modelopt.onnx.logging_config  # noqa: F401  (installs ModelOpt's handlers; we then detach them)

    level = logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.WARNING
    saved = {name: logging.getLogger(name).level for name in _modelopt_loggers()}
    drop = _DropNoise()
    _detach_handlers(level, drop)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    finally:
        _detach_handlers(None, None)
        for name in _modelopt_loggers():
            logging.getLogger(name).removeFilter(drop)
        for name, lvl in saved.items():
            logging.getLogger(name).setLevel(lvl)
        if captured.getvalue().strip():
            logger.debug("modelopt output:\n%s", captured.getvalue().rstrip())


def _modelopt_loggers() -> list[str]:
    return [n for n in list(logging.root.manager.loggerDict) if n.startswith("modelopt")]


def _detach_handlers(level: int | None, drop: logging.Filter | None) -> None:
    """Remove ModelOpt's own handlers so its records only propagate to the application's."""
    for name in _modelopt_loggers():
        lg = logging.getLogger(name)
        for handler in lg.handlers[:]:
            lg.removeHandler(handler)
        lg.propagate = True
        if level is not None:
            lg.setLevel(level)
        if drop is not None:
            lg.addFilter(drop)


class _DropNoise(logging.Filter):
    """Messages that are expected here and mean nothing to a user: demoted to DEBUG."""

    NOISE = (
        "Failed to get GPU count",  # NVML is absent on a CPU-only machine
        "Shared constants were detected",  # ModelOpt duplicating shared weights before it rewrites them
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.NOISE):
            logger.debug("modelopt: %s", message)
            return False
        return True
