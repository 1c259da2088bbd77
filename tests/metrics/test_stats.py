"""Statistics on per-example scores, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segloss.metrics.stats import (
    bootstrap_ci,
    crossed_bootstrap_ci,
    holm_adjust,
    paired_permutation_test,
    pearson,
    summarize,
)


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


def test_holm_hand_computed():
    # Sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 4·0.01 = 0.04; 3·0.03 = 0.09; 2·0.04 = 0.08 → raised to 0.09 (monotone);
    # 1·0.5 = 0.5. None is no test: it stays None and does not count in m.
    assert holm_adjust([0.01, 0.04, 0.03, None, 0.5]) == pytest.approx([0.04, 0.09, 0.09, None, 0.5])
    assert holm_adjust([0.3, 0.6]) == [0.6, 0.6]  # 2·0.3 = 0.6, then max(0.6, 1·0.6)
    assert holm_adjust([0.9, 0.8, 0.7]) == [1.0, 1.0, 1.0]  # capped at 1
    assert holm_adjust([]) == []


def test_holm_controls_the_family_wise_error_where_raw_p_values_do_not():
    # Four true nulls, 2000 simulated families: the chance that some raw p < 0.05 is about 1 - 0.95**4 ≈ 0.19;
    # after Holm it is at most 0.05 (Bonferroni's bound, which Holm never exceeds).
    rng = np.random.default_rng(0)
    p = rng.random((2000, 4))  # uniform p-values under the null
    raw = np.mean((p < 0.05).any(axis=1))
    adjusted = np.mean([min(holm_adjust(list(row))) < 0.05 for row in p])
    assert 0.16 < raw < 0.22
    assert adjusted <= 0.06


def test_holm_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.2, 1.5])


def test_paired_test_across_seeds_known_answer():
    # 2 seeds × 2 problems, differences a - b = [[1, 1], [1, 0]]: of the 2**4 = 16 sign flips, |sum| >= 3 only for
    # the all-plus and all-minus flips of the three ones (the zero's sign does not matter): 4 of 16 → p = 0.25.
    a = np.array([[1.0, 1.0], [1.0, 0.0]])
    b = np.zeros((2, 2))
    assert paired_permutation_test(a.ravel(), b.ravel()) == 0.25
    # A loss better on every (seed, problem) pair of 3 seeds × 100 problems: the sampled test gives 1 / (R + 1).
    a, b = np.ones((3, 100)), np.zeros((3, 100))
    assert paired_permutation_test(a.ravel(), b.ravel(), n_resamples=2000) == pytest.approx(1 / 2001)
    # The same scores in another order of problems: no difference at all.
    x = (np.random.default_rng(1).random((3, 100)) > 0.5).astype(float)
    assert paired_permutation_test(x.ravel(), x.ravel(), n_resamples=500) == 1.0


def test_crossed_bootstrap_point_values_and_degenerate_intervals():
    a = np.array([[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0]])  # mean 5/8
    b = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]])  # mean 4/8
    assert crossed_bootstrap_ci(a)[0] == pytest.approx(5 / 8)
    assert crossed_bootstrap_ci(a, b, statistic="difference")[0] == pytest.approx(1 / 8)
    assert crossed_bootstrap_ci(a, b, statistic="relative")[0] == pytest.approx(0.25)
    # Constant scores: every resample has the same mean, the interval collapses.
    assert crossed_bootstrap_ci(np.full((3, 5), 0.4)) == pytest.approx((0.4, 0.4, 0.4))
    # b = a / 2 everywhere: every paired resample has relative change exactly +100 %.
    x = np.random.default_rng(0).random((3, 20)) + 0.1
    assert crossed_bootstrap_ci(x, x / 2, statistic="relative") == pytest.approx((1.0, 1.0, 1.0))
    # A zero baseline has no relative change.
    assert all(math.isnan(v) for v in crossed_bootstrap_ci(a, np.zeros((2, 4)), statistic="relative"))


def test_crossed_bootstrap_sees_seed_variance_that_pooling_hides():
    # Seeds differ a lot (0.2 vs 0.8), problems within a seed are consistent: resampling seeds must widen the CI
    # far beyond the problem-level interval of the pooled scores.
    rng = np.random.default_rng(0)
    a = np.vstack([rng.random(200) < 0.2, rng.random(200) < 0.8, rng.random(200) < 0.5]).astype(float)
    _, low, high = crossed_bootstrap_ci(a, seed=1)
    _, pooled_low, pooled_high = bootstrap_ci(a.ravel(), seed=1)
    assert high - low > 3 * (pooled_high - pooled_low)
    assert low < a.mean() < high


def test_crossed_bootstrap_is_paired():
    # b = a + 0.1 on every cell: the paired difference is -0.1 in every resample, even though both means vary.
    a = np.random.default_rng(2).random((4, 30))
    assert crossed_bootstrap_ci(a, a + 0.1, statistic="difference") == pytest.approx((-0.1, -0.1, -0.1))


def test_crossed_bootstrap_bad_input():
    with pytest.raises(ValueError, match="statistic"):
        crossed_bootstrap_ci([[1.0]], statistic="median")
    with pytest.raises(ValueError, match=r"\[seeds, problems\]"):
        crossed_bootstrap_ci([1.0, 2.0])
    with pytest.raises(ValueError, match="same"):
        crossed_bootstrap_ci([[1.0, 2.0]], [[1.0]], statistic="difference")
    with pytest.raises(ValueError, match="NaN"):
        crossed_bootstrap_ci([[1.0, math.nan]])
