"""Statistics on per-example scores, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segloss.metrics.stats import bootstrap_ci, paired_permutation_test, pearson, summarize


def test_bootstrap_constant_values_collapse():
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    assert bootstrap_ci([0.25]) == (0.25, 0.25, 0.25)


def test_bootstrap_two_values_hand_computed():
    # Resample means of {0, 1} with n=2 are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4:
    # the 2.5 % and 97.5 % quantiles are 0 and 1.
    mean, low, high = bootstrap_ci([0.0, 1.0], n_resamples=4000, seed=3)
    assert mean == 0.5
    assert (low, high) == (0.0, 1.0)


def test_bootstrap_seeded_and_narrower_with_lower_confidence():
    values = np.random.default_rng(0).random(50)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    _, lo95, hi95 = bootstrap_ci(values, seed=7)
    _, lo50, hi50 = bootstrap_ci(values, seed=7, confidence=0.5)
    assert lo95 < lo50 < values.mean() < hi50 < hi95
    # Standard error of the mean ≈ 0.29 / sqrt(50) ≈ 0.04: the 95 % interval is about ±0.08 wide.
    assert 0.1 < hi95 - lo95 < 0.2


def test_bootstrap_drops_nan_and_rejects_bad_input():
    assert bootstrap_ci([1.0, math.nan, None, 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([math.nan])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=95)


def test_summarize_per_key_ignores_missing():
    rows = [{"em": 1.0, "iou": None}, {"em": 0.0, "iou": math.nan}, {"em": 1.0, "iou": 0.5, "new": 2.0}]
    out = summarize(rows)
    assert list(out) == ["em", "iou", "new"]
    assert out["em"]["mean"] == pytest.approx(2 / 3) and out["em"]["n"] == 3
    assert 0.0 <= out["em"]["ci_low"] <= out["em"]["mean"] <= out["em"]["ci_high"] <= 1.0
    assert out["iou"] == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 1}
    assert out["new"]["n"] == 1


def test_summarize_all_missing_key():
    out = summarize([{"x": None}, {"x": math.nan}])
    assert out["x"]["n"] == 0 and math.isnan(out["x"]["mean"])


def test_permutation_exact_hand_computed():
    # d = [1, 1, 1]: only the all-plus and all-minus flips reach |mean| = 1 → 2 / 8.
    assert paired_permutation_test([1, 1, 1], [0, 0, 0]) == 0.25
    # d = [1, 2, 3]: flip sums 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 twice → 2 / 8.
    assert paired_permutation_test([1, 2, 3], [0, 0, 0]) == 0.25
    # d = [3, -1]: flip sums 2, 4, -4, -2 all reach |2| → p = 1.
    assert paired_permutation_test([3, 0], [0, 1]) == 1.0
    assert paired_permutation_test([0.5, 0.5], [0.5, 0.5]) == 1.0


def test_permutation_sampled_branch_detects_big_effect():
    a = np.ones(30)
    b = np.zeros(30)
    p = paired_permutation_test(a, b, n_resamples=2000, seed=1)
    assert p == pytest.approx(1 / 2001)
    x = np.random.default_rng(0).random(30)
    assert paired_permutation_test(x, x, n_resamples=500) == 1.0  # no difference at all


def test_permutation_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        paired_permutation_test([1, 2], [1])


def test_pearson_hand_computed():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # dx = [-1, 0, 1], dy = [-1, 1, 0]: 1 / sqrt(2 * 2) = 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(pearson([1], [2]))
    with pytest.raises(ValueError, match="equal length"):
        pearson([1, 2], [1, 2, 3])
