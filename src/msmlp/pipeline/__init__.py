"""``msmlp-export`` as steps: build -> export -> check -> verify -> FP16 / INT8 / BF16 -> engine.

It sits above ``runtime`` and ``verify`` (every artefact is verified on a backend before it is kept),
which is why it is not inside ``exporters/``: ``exporters/`` holds the graph transforms themselves.
The names below load on first use, so ``msmlp.pipeline.options`` (what ``--help`` is built from)
imports nothing heavy.
"""

from __future__ import annotations

from msmlp.lazy import by_module, lazy_exports

_LAZY = by_module(
    {
        "msmlp.pipeline.options": ("ExportOptions", "check_options"),
        "msmlp.pipeline.state": ("ExportResult",),
        "msmlp.pipeline.run": ("run_export",),
    }
)

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
