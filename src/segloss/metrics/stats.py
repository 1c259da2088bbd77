"""Uncertainty and comparison statistics for per-example metric values (numpy, vectorised, seeded).

* :func:`bootstrap_ci` — mean and percentile-bootstrap confidence interval of the mean (Efron & Tibshirani, 1993).
* :func:`summarize` — the ``metrics.json`` block: mean, CI and count per metric over a list of per-example rows.
* :func:`paired_permutation_test` — two-sided sign-flip permutation test on paired differences (exact when
  ``2**n <= n_resamples``).
* :func:`pearson` — Pearson correlation (NaN when either input is constant).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def _clean(values: Iterable[float | None]) -> np.ndarray:
    """Float64 array of the finite-or-infinite values, with None/NaN dropped."""
    arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return arr[~np.isnan(arr)]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``values`` and the percentile bootstrap CI of that mean.

    ``values``: 1-D sequence of per-example scores (None/NaN are dropped). Draws ``n_resamples`` resamples of size n
    with replacement (one ``[n_resamples, n]`` index matrix) and returns ``(mean, q[(1-c)/2], q[(1+c)/2])`` of the
    resample means. With one value the interval collapses to that value.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}; use e.g. 0.95")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    arr = _clean(values)
    if arr.size == 0:
        raise ValueError("bootstrap_ci needs at least one non-NaN value; got none")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_resamples, arr.size))  # [R, n]
    means = arr[idx].mean(axis=1)  # [R]
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(low), float(high)


def summarize(
    rows: Sequence[Mapping[str, float | None]], seed: int = 0, *, n_resamples: int = 1000, confidence: float = 0.95
) -> dict[str, dict[str, float]]:
    """Per key of ``rows``: ``{"mean", "ci_low", "ci_high", "n"}`` (bootstrap CI; None/NaN values ignored per key).

    Keys keep their first-seen order. A key whose values are all missing gets NaN statistics and ``n = 0``.
    """
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        arr = _clean(row.get(key) for row in rows)
        if arr.size == 0:
            out[key] = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
            continue
        mean, low, high = bootstrap_ci(arr, seed=seed, n_resamples=n_resamples, confidence=confidence)
        out[key] = {"mean": mean, "ci_low": low, "ci_high": high, "n": int(arr.size)}
    return out


def paired_permutation_test(
    a: Sequence[float], b: Sequence[float], *, seed: int = 0, n_resamples: int = 10000
) -> float:
    """Two-sided p-value that paired scores ``a`` and ``b`` (same examples, same order) have equal means.

    Statistic: ``|mean(a - b)|``. Under the null each difference's sign is exchangeable, so the p-value is the share
    of sign flips whose statistic is at least the observed one. All ``2**n`` flips are enumerated when that is at most
    ``n_resamples`` (exact test); otherwise ``n_resamples`` random flips are drawn and ``(1 + hits) / (1 + R)`` is
    returned (never 0). Pairs where either value is NaN are dropped.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"a and b must be 1-D and of equal length, got shapes {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    diff = (x - y)[keep]  # [n]
    n = diff.size
    if n == 0:
        raise ValueError("paired_permutation_test needs at least one pair without NaN")
    observed = abs(diff.mean())
    tol = 1e-12 * max(1.0, observed)
    if 2**n <= n_resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # [2^n, n]
        stats = np.abs((signs * diff).mean(axis=1))
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([1.0, -1.0]), size=(n_resamples, n))  # [R, n]
    stats = np.abs((signs * diff).mean(axis=1))
    return float((1 + np.sum(stats >= observed - tol)) / (1 + n_resamples))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient; NaN when either input is constant or has fewer than two values."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got shapes {xa.shape} and {ya.shape}")
    if xa.size < 2:
        return math.nan
    dx, dy = xa - xa.mean(), ya - ya.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denom == 0.0:
        return math.nan
    return float(dx @ dy) / denom
