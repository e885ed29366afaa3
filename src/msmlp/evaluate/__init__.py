"""Accuracy of exported artefacts against labels: labelled image sets (ImageFolder, the ImageNet validation
layouts, CSV/TSV), a streaming evaluation of several candidates over the same images, and the statistics
that say how far apart they are (Wilson intervals, exact McNemar).

Sits beside :mod:`msmlp.verify` and :mod:`msmlp.diagnose`: above runtime and export, below the commands.
"""

from __future__ import annotations
