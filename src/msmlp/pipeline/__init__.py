"""``msmlp-export`` as steps: build -> export -> check -> verify -> FP16 / INT8 / BF16 -> engine.

It sits above ``runtime`` and ``verify`` (every artefact is verified on a backend before it is kept),
which is why it is not inside ``export/``: ``export/`` holds the graph transforms themselves.
"""

from __future__ import annotations

from msmlp.pipeline.options import ExportOptions, check_options
from msmlp.pipeline.run import ExportResult, run_export

__all__ = ["ExportOptions", "ExportResult", "check_options", "run_export"]
