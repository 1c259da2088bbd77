"""Coverage of the CI for the relative change in EM (treatment / CE − 1) on simulated null studies.

    python benchmarks/bench_relative_ci.py                   # 1000 studies per seed count; seconds on 2 cores
    python benchmarks/bench_relative_ci.py --studies 300

docs/study-plan.md pre-registered a percentile bootstrap over seeds for the relative change; a percentile bootstrap
over a handful of units is known to be too narrow. This measures by how much, on the studies of `simulate_crossed`
(200 problems, CE near 50 % EM, seed SD 0.3 and seed × arm SD 0.1 on the logit scale, no true difference: the true
relative change is 0), against the delta-method t-interval the report uses now
(`segloss.experiments.analysis.relative_change`). Prints, per number of seeds S, the share of studies whose 95 %
interval holds 0 for each.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from segloss.experiments.analysis import relative_change, simulate_crossed


def percentile_bootstrap(treatment: np.ndarray, control: np.ndarray, seed: int, resamples: int = 2000) -> list[float]:
    """The plan's interval: percentiles of mean(t*) / mean(c*) − 1 over seed resamples (control mean 0: dropped)."""
    idx = np.random.default_rng(seed).integers(0, treatment.size, size=(resamples, treatment.size))  # [R, S]
    mean_t, mean_c = treatment[idx].mean(axis=1), control[idx].mean(axis=1)  # [R]
    keep = mean_c > 0
    return [float(q) for q in np.quantile(mean_t[keep] / mean_c[keep] - 1, [0.025, 0.975])]


def coverage(n_seeds: int, n_studies: int, rng: np.random.Generator) -> tuple[float, float]:
    treated, control = simulate_crossed(rng, n_studies, n_seeds, 200)  # [R, S, N] each
    t_means, c_means = treated.mean(-1), control.mean(-1)  # [R, S]
    boot = delta = 0
    for r in range(n_studies):
        low, high = percentile_bootstrap(t_means[r], c_means[r], seed=r)
        boot += low <= 0.0 <= high
        ci = relative_change(t_means[r], c_means[r])["ci"]
        delta += ci is not None and ci[0] <= 0.0 <= ci[1]
    return boot / n_studies, delta / n_studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10, 20])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    print(f"# {platform.node()}, {args.studies} null studies per row, 200 problems, 95 % intervals")
    print("| seeds | percentile bootstrap (the plan's) | delta-method t-interval (the report's) |")
    print("|---:|---:|---:|")
    for n_seeds in args.seeds:
        boot, delta = coverage(n_seeds, args.studies, rng)
        print(f"| {n_seeds} | {boot:.3f} | {delta:.3f} |")
    print(f"# {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
