"""Run the Triton kernels in triton's CPU interpreter: the flag must be set before triton.jit decorates
them, i.e. before msmlp.plugins.kernels is first imported (the test modules here import it)."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"
