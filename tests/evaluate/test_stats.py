"""Wilson intervals and the exact McNemar test against values worked by hand (and scipy where installed)."""

from __future__ import annotations

import math

import pytest

from msmlp.evaluate.stats import mcnemar_exact, wilson


def test_wilson_matches_the_hand_computed_interval():
    # 8 of 10: p = 0.8, z^2 = 3.8415; centre 0.99207/1.38415, half 1.96*sqrt(0.0256037)/1.38415
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)


def test_wilson_stays_inside_zero_one_at_the_edges():
    lo, hi = wilson(0, 12)
    assert lo == 0.0 and hi == pytest.approx(3.8415 / (12 + 3.8415), abs=1e-4)
    lo, hi = wilson(12, 12)
    assert hi == 1.0 and lo == pytest.approx(12 / (12 + 3.8415), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_narrows_with_more_images():
    small, large = wilson(80, 100), wilson(800, 1000)
    assert large[1] - large[0] < small[1] - small[0]


def test_mcnemar_on_a_small_known_table():
    # 1 gained, 9 lost: 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0  # a balanced table is no evidence at all
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)


@pytest.mark.parametrize(("gained", "lost"), [(3, 17), (40, 61), (250, 300), (0, 1)])
def test_mcnemar_agrees_with_scipy_binomtest(gained, lost):
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(gained, gained + lost, 0.5).pvalue
    assert math.isclose(mcnemar_exact(gained, lost), expected, rel_tol=1e-9)


@pytest.mark.parametrize(("gained", "lost"), [(990, 1010), (1000, 1001), (1_400, 1_500), (24_000, 26_000)])
def test_mcnemar_for_many_pairs_matches_the_exact_sum_and_scipy(gained, lost):
    """Beyond EXACT_UP_TO the log-space tail must agree with the exact one and with scipy."""
    p = mcnemar_exact(gained, lost)
    n = gained + lost
    if n <= 3_000:
        exact = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n)
        assert math.isclose(p, exact, rel_tol=1e-7)
    stats = pytest.importorskip("scipy.stats")
    assert math.isclose(p, stats.binomtest(gained, n, 0.5).pvalue, rel_tol=1e-6)
