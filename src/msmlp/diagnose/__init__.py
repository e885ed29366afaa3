"""Precision you can debug and plan: layer-by-layer comparison against FP32, INT8 sensitivity per layer
group, and an automatic mixed-precision search (:mod:`msmlp.diagnose.autoprec`).

Sits beside :mod:`msmlp.verify`: above runtime and export, below the pipeline and the commands.
"""

from __future__ import annotations
