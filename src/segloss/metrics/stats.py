"""Uncertainty and comparison statistics for per-example metric values (numpy, vectorised, seeded).

* :func:`bootstrap_ci` — mean and percentile-bootstrap confidence interval of the mean (Efron & Tibshirani, 1993).
* :func:`summarize` — the ``metrics.json`` block: mean, CI and count per metric over a list of per-example rows.
* :func:`paired_permutation_test` — two-sided sign-flip permutation test on paired differences (exact when
  ``2**n <= n_resamples``).
* :func:`crossed_bootstrap_ci` — CI of a mean, a paired difference or a paired relative change over a
  seed × problem matrix, resampling seeds and problems independently (both are samples: a crossed design).
* :func:`holm_adjust` — Holm–Bonferroni step-down adjusted p-values for a family of tests (Holm, 1979).
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
    hits = 0
    for start in range(0, n_resamples, _CHUNK):  # chunks keep the [R, n] sign matrix small for many pairs
        signs = rng.choice(np.array([1.0, -1.0]), size=(min(_CHUNK, n_resamples - start), n))  # [r, n]
        hits += int(np.sum(np.abs((signs * diff).mean(axis=1)) >= observed - tol))
    return float((1 + hits) / (1 + n_resamples))


_CHUNK = 1000
STATISTICS = ("mean", "difference", "relative")


def crossed_bootstrap_ci(
    a: Sequence[Sequence[float]] | np.ndarray,
    b: Sequence[Sequence[float]] | np.ndarray | None = None,
    *,
    statistic: str = "mean",
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Point value and percentile-bootstrap CI of a statistic of a ``[S, N]`` matrix (seeds × problems).

    Each resample draws S seed rows and N problem columns with replacement, independently (every seed saw the same
    problems, so the design is crossed: both the seeds and the problems are samples). ``statistic``:

    * ``"mean"`` — ``mean(a)`` (``b`` unused);
    * ``"difference"`` — ``mean(a) - mean(b)``, paired: the same rows and columns of ``a`` and ``b`` in a resample;
    * ``"relative"`` — ``mean(a) / mean(b) - 1``, paired; resamples where ``mean(b) == 0`` are dropped, and the
      result is NaN throughout when ``mean(b)`` itself is 0.

    A resample mean is ``w_s @ M @ w_n / (S N)`` with the draw counts ``w`` (one einsum, no copy of M per resample).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}; use e.g. 0.95")
    x = _matrix(a, "a")
    y = None if statistic == "mean" else _matrix(b, "b")
    if y is not None and y.shape != x.shape:
        raise ValueError(f"a and b must have the same [seeds, problems] shape, got {x.shape} and {y.shape}")
    n_seeds, n_items = x.shape
    rng = np.random.default_rng(seed)
    w_s = _draw_counts(rng, n_resamples, n_seeds)  # [R, S]
    w_n = _draw_counts(rng, n_resamples, n_items)  # [R, N]
    mean_x = np.einsum("rs,sn,rn->r", w_s, x, w_n) / (n_seeds * n_items)  # [R]
    if y is None:
        return _point_and_interval(float(x.mean()), mean_x, confidence)
    mean_y = np.einsum("rs,sn,rn->r", w_s, y, w_n) / (n_seeds * n_items)  # [R]
    if statistic == "difference":
        return _point_and_interval(float(x.mean() - y.mean()), mean_x - mean_y, confidence)
    if y.mean() == 0:
        return math.nan, math.nan, math.nan
    keep = mean_y != 0
    return _point_and_interval(float(x.mean() / y.mean() - 1), mean_x[keep] / mean_y[keep] - 1, confidence)


def _matrix(values: Sequence[Sequence[float]] | np.ndarray | None, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty [seeds, problems] matrix, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} has NaN values; drop the problems without a score before the bootstrap")
    return arr


def _draw_counts(rng: np.random.Generator, n_resamples: int, n: int) -> np.ndarray:
    """How often each of n units is drawn in each of the resamples (n draws with replacement): ``[R, n]``."""
    idx = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1.0)
    return counts


def _point_and_interval(point: float, resampled: np.ndarray, confidence: float) -> tuple[float, float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return point, float(low), float(high)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input order (None stays None and is not counted as a test).

    Sort the m p-values ascending; the k-th smallest (k = 1…m) becomes ``max_{j<=k} min(1, (m - j + 1) p_(j))``.
    Rejecting where the adjusted value is below alpha controls the family-wise error rate at alpha for any
    dependence between the tests (Holm, 1979, *A simple sequentially rejective multiple test procedure*).
    """
    present = [(i, float(p)) for i, p in enumerate(p_values) if p is not None]
    for _, p in present:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(present, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


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
