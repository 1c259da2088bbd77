"""Type-I error, power and CI coverage of the study's tests on simulated crossed studies (seeds × problems).

    python benchmarks/bench_analysis.py                      # the plan's designs; a few minutes on 2 cores
    python benchmarks/bench_analysis.py --studies 300 --model-studies 50    # quicker

Each simulated study is ``segloss.experiments.analysis.simulate_crossed``: two arms scored 0/1 on the same N = 200
problems at S seeds, with problem difficulty, a seed effect and a seed × arm effect (``--seed-by-arm-sd``, logit
scale). Per design it reports, at α = 0.05 (two-sided):

* the **seed-level paired t-test** (the report's test): type-I error over null studies, power at the plan's MDE
  (computed from the simulated σ_d), and the coverage of its 95 % t-interval of the difference;
* the **two-way cluster-robust model** (the report's check): type-I error over ``--model-studies`` null studies;
* **TOST** at a ±5-point margin: how often equivalence is declared when the true difference *is* the margin
  (must stay ≤ α) and when it is 0 (its power);
* the tests the report used before: the **pooled sign-flip test** over the S × N (seed, problem) pairs (type-I
  error) and the **crossed bootstrap** of the difference (its SE against the true SD of the estimate).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np


def seed_means(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a.mean(-1), b.mean(-1)  # [R, S]


def design_rows(args: argparse.Namespace, n_seeds: int, seed_by_arm_sd: float, rng: np.random.Generator) -> dict:
    from segloss.experiments.analysis import (
        clustered_difference,
        equivalence_p,
        mde_points,
        seed_level_test,
        simulate_crossed,
    )
    from segloss.metrics.stats import crossed_bootstrap_ci, paired_permutation_test

    n_items, alpha, out = args.problems, 0.05, {}
    sim = dict(seed_by_arm_sd=seed_by_arm_sd)
    a, b = simulate_crossed(rng, args.studies, n_seeds, n_items, 0.0, **sim)
    ma, mb = seed_means(a, b)
    diff, low, high, p, _ = seed_level_test(ma, mb)
    sd_points = 100 * float((ma - mb).std(ddof=1))
    out["sigma_d"] = sd_points
    out["t_type1"] = float(np.mean(p < alpha))
    out["t_coverage"] = float(np.mean((low <= 0) & (high >= 0)))
    out["sd_estimate"] = 100 * float(diff.std(ddof=1))  # the true SD of the estimated difference, over studies
    mde = mde_points(n_seeds, sd_points, alpha=alpha)
    out["mde"] = mde
    a1, b1 = simulate_crossed(rng, args.studies, n_seeds, n_items, mde / 100, **sim)
    out["t_power"] = float(np.mean(seed_level_test(*seed_means(a1, b1))[3] < alpha))
    k = args.model_studies
    tic = time.perf_counter()
    model_p = [clustered_difference(a[i], b[i])["p_value"] for i in range(k)]
    out["model_seconds"] = (time.perf_counter() - tic) / k
    out["model_type1"] = float(np.mean([q is not None and q < alpha for q in model_p]))
    pooled = [paired_permutation_test(a[i].ravel(), b[i].ravel(), seed=i, n_resamples=2000) for i in range(k)]
    out["pooled_type1"] = float(np.mean(np.array(pooled) < alpha))
    boot = [crossed_bootstrap_ci(a[i], b[i], statistic="difference", seed=i, n_resamples=500) for i in range(k)]
    out["bootstrap_se_ratio"] = float(np.mean([(h - lo) / (2 * 1.96) for _, lo, h in boot])) * 100 / out["sd_estimate"]
    margin = args.margin / 100
    am, bm = simulate_crossed(rng, args.studies, n_seeds, n_items, margin, **sim)
    at_margin = [equivalence_p(x, y, margin) for x, y in zip(*seed_means(am, bm), strict=True)]
    out["tost_at_margin"] = float(np.mean([q is not None and q < alpha for q in at_margin]))
    at_zero = [equivalence_p(x, y, margin) for x, y in zip(ma, mb, strict=True)]
    out["tost_power_at_0"] = float(np.mean([q is not None and q < alpha for q in at_zero]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000, help="Simulated studies per design (t-test, TOST).")
    parser.add_argument("--model-studies", type=int, default=200, help="Of those, fitted with the slower tests.")
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seed-by-arm-sd", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--margin", type=float, default=5.0, help="Equivalence margin (points).")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    load = Path("/proc/loadavg").read_text()[:14] if Path("/proc/loadavg").is_file() else "?"
    print(f"# {platform.node()}, {platform.processor() or platform.machine()}; load {load}")
    header = (
        "| S | seed×arm SD | σ_d | t-test type I | t-interval coverage | MDE | power at MDE | model type I | "
        "TOST at ±m | TOST power at 0 | pooled sign-flip type I | crossed-bootstrap SE / true SD | s per model fit |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=1):
        for n_seeds in args.seeds:
            for sd in args.seed_by_arm_sd:
                r = design_rows(args, n_seeds, sd, rng)
                print(
                    f"| {n_seeds} | {sd:g} | {r['sigma_d']:.2f} | {r['t_type1']:.3f} | {r['t_coverage']:.3f} | "
                    f"{r['mde']:.2f} | {r['t_power']:.3f} | {r['model_type1']:.3f} | {r['tost_at_margin']:.3f} | "
                    f"{r['tost_power_at_0']:.3f} | {r['pooled_type1']:.3f} | {r['bootstrap_se_ratio']:.2f} | "
                    f"{r['model_seconds']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
