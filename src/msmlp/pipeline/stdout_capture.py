"""File-descriptor capture of stdout: third-party libraries print on it, and msmlp's stdout carries only
its own results (tables, JSON)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from msmlp.log import logger


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send whatever third-party code prints on stdout (ModelOpt does) to the debug log, not the user's
    stdout, which carries only msmlp's own output (tables, JSON)."""
    import sys
    import tempfile

    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout replaced by an object without a file descriptor
        yield
        return
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace").strip()
            if text:
                logger.debug("third-party output:\n%s", text)
