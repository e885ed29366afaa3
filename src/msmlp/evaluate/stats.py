"""Confidence intervals and the paired test: a top-1 difference on a few thousand images is often noise.

Wilson's score interval stays inside [0, 1] and is honest near 0 % and 100 %, where the normal
approximation is not. McNemar's exact test uses only the images on which two models disagree about
correctness, which is what a paired comparison on the same images should look at.
"""

from __future__ import annotations

import math

import numpy as np

EXACT_UP_TO = 2000
Z95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal


def wilson(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / total``; (0, 1) when nothing was seen."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))  # rounding: keep p inside


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of ``gained`` vs ``lost`` discordant pairs at 1/2.

    Exact integer arithmetic (``math.comb``) up to ``EXACT_UP_TO`` discordant pairs; beyond, the same
    binomial tail summed in log space (the integer sum grows quadratically, minutes at 50,000 pairs).
    """
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    if n <= EXACT_UP_TO:
        return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    i = np.arange(1, k + 1, dtype=np.float64)
    log_pmf = np.concatenate([[0.0], np.cumsum(np.log(n - i + 1) - np.log(i))]) - n * math.log(2)
    top = log_pmf.max()
    return min(1.0, 2 * math.exp(top) * float(np.exp(log_pmf - top).sum()))


def paired_drop_interval(
    ref_correct: int, cand_correct: int, lost: int, gained: int, total: int, z: float = Z95
) -> tuple[float, float]:
    """95 % interval of the paired top-1 drop ``(ref_correct - cand_correct) / total`` of a candidate
    scored on the same images as its reference: Newcombe's (1998) method 10, which combines the two
    Wilson intervals with the phi correlation of the 2x2 table of right/wrong. Unlike a Wald interval it
    stays honest with few disagreements and near 100 %. ``lost``/``gained``: images only the reference /
    only the candidate got right."""
    if total <= 0:
        return -1.0, 1.0
    both = ref_correct - lost
    neither = total - both - lost - gained
    p1, p2 = ref_correct / total, cand_correct / total
    l1, u1 = wilson(ref_correct, total, z)
    l2, u2 = wilson(cand_correct, total, z)
    margins = (both + lost) * (gained + neither) * (both + gained) * (lost + neither)
    phi = (both * neither - lost * gained) / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    drop = p1 - p2
    return max(-1.0, drop - below), min(1.0, drop + above)
