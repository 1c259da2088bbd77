"""Coverage of the report's CI for the relative change in EM (treatment / CE − 1) on simulated null studies.

    python benchmarks/bench_relative_ci.py                   # 1000 studies per seed count; about a minute on 2 cores
    python benchmarks/bench_relative_ci.py --studies 300

The report's relative change (`segloss.experiments.analysis.relative_change`) carries a percentile bootstrap CI over
seeds, as docs/study-plan.md pre-registered. A percentile bootstrap over a handful of units is known to be too
narrow; this measures by how much, on the studies of `simulate_crossed` (200 problems, CE near 50 % EM, seed SD 0.3
and seed × arm SD 0.1 on the logit scale, no true difference: the true relative change is 0). For comparison it
also scores a delta-method t-interval on the per-seed means (the ratio's standard error from the seed-level
variances of the difference and of CE, a t quantile with S − 1 degrees of freedom), which is not what the report
uses. Prints, per number of seeds S, the share of studies whose 95 % interval holds 0 for each.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from scipy import stats

from segloss.experiments.analysis import relative_change, simulate_crossed


def delta_t_interval(treatment: np.ndarray, control: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Delta-method t-interval of mean(treatment) / mean(control) − 1 over paired per-seed scores ``[S]``."""
    diff = treatment - control  # [S]
    n, c_mean, d_mean = diff.size, control.mean(), diff.mean()
    cov = np.cov(np.vstack([diff, control]), ddof=1) / n  # [2, 2]: covariance of the two means
    var = cov[0, 0] / c_mean**2 - 2 * d_mean * cov[0, 1] / c_mean**3 + d_mean**2 * cov[1, 1] / c_mean**4
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * np.sqrt(var)
    ratio = d_mean / c_mean
    return float(ratio - half), float(ratio + half)


def coverage(n_seeds: int, n_studies: int, rng: np.random.Generator) -> tuple[float, float]:
    treated, control = simulate_crossed(rng, n_studies, n_seeds, 200)  # [R, S, N] each
    t_means, c_means = treated.mean(-1), control.mean(-1)  # [R, S]
    boot = delta = 0
    for r in range(n_studies):
        ci = relative_change(t_means[r], c_means[r], seed=r)["ci"]
        boot += ci is not None and ci[0] <= 0.0 <= ci[1]
        low, high = delta_t_interval(t_means[r], c_means[r])
        delta += low <= 0.0 <= high
    return boot / n_studies, delta / n_studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10, 20])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    print(f"# {platform.node()}, {args.studies} null studies per row, 200 problems, 95 % intervals")
    print("| seeds | percentile bootstrap (the report's) | delta-method t-interval |")
    print("|---:|---:|---:|")
    for n_seeds in args.seeds:
        boot, delta = coverage(n_seeds, args.studies, rng)
        print(f"| {n_seeds} | {boot:.3f} | {delta:.3f} |")
    print(f"# {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
