"""The statistics of a study: each arm's score over seeds and problems, and each comparison's tests and verdict.

This implements the "Analysis" section of ``docs/study-plan.md``. The data are crossed: every cell (one arm — a loss
on some LoRA targets — at one training seed) is scored on the same problems. Per comparison of a *treatment* arm with
a *control* arm, on the seeds where both finished and the problems all their cells share:

1. **Seed-level paired test** (the p-value and the CI that decide): per seed ``d_s`` = mean score of the treatment
   − of the control over the problems; ``scipy.stats.ttest_rel`` over the seeds and the t-interval of ``mean(d_s)``.
   The seed is the replicated unit, so its type-I error is right whatever the correlation between problems
   (``tests/experiments/test_analysis.py`` checks it on simulated crossed studies; ``benchmarks/bench_analysis.py``
   compares it with the pooled tests it replaces).
2. **A model with problem and seed effects**, beside it as a check: the linear probability model
   ``correct ~ treatment + seed + problem`` fitted by OLS (statsmodels), with standard errors clustered two ways, by
   seed and by problem (``cov_type="cluster"``). The coefficient of ``treatment`` is the difference. When it and the
   seed-level test disagree on significance the comparison is marked *fragile*.
3. **Equivalence** (TOST) against the margin ±m points: ``statsmodels.stats.weightstats.ttost_paired`` on the
   per-seed scores.
4. **Verdict**: ``shown better``/``shown worse`` when the seed-level p (Holm-adjusted within its family) is below α;
   else ``shown equivalent within ±m`` when the TOST p is below α; else ``inconclusive``.
5. **Relative change** (treatment / control − 1), secondary: a delta-method t-interval over seeds
   (:func:`relative_change`); none when the control mean is 0. The plan's percentile bootstrap was too narrow with
   few seeds (``benchmarks/bench_relative_ci.py``).

Differences are in **points** (percentage points: 100 × the difference of the mean per-problem scores). The minimum
detectable effect ``mde_points`` is ``TTestPower().solve_power(nobs=n, alpha=α', power=0.8) · σ_d`` with the plan's
σ_d (``mde_observed_points``: with the observed SD of ``d_s``); α' is α, or α/k for a Holm family of k (its worst
case). Families: ``primary`` and ``exploratory`` comparisons are tested alone; every other family name is one Holm
family per (model, dataset).

Without a plan (:class:`StudyPlan`), each arm is compared with CE on the same LoRA targets (``lovasz`` with ``ce``,
``lovasz-authors`` with ``ce-authors``), on the dataset's primary metric, as one Holm family.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloss.config import config_field
from segloss.experiments.results import ATTENTION, CellResult, arm_name, finite

BASELINE = "ce"
ALPHA = 0.05
POWER = 0.8
CONFIDENCE = 0.95
DEFAULT_MARGIN_POINTS = 5.0
DEFAULT_FAMILY = "vs-ce"
UNADJUSTED_FAMILIES = ("primary", "exploratory")
# The metric a dataset is compared on: EM for math sets, generated-letter accuracy for multiple-choice sets.
PRIMARY_METRICS = ("exact_match", "accuracy", "acc_norm", "acc")
LOWER_IS_BETTER = frozenset(
    {"missing_steps", "extra_steps", "repetitions", "wrong_operators", "inverted_operands", "calculation_errors"}
)
SIDE_METRICS = ("iou", "well_formed", "missing_steps", "extra_steps")


@dataclasses.dataclass
class Comparison:
    """One pre-registered comparison: ``treatment`` arm vs ``control`` arm on ``metric``, in a ``family``."""

    treatment: str = config_field(
        "", help="Arm compared: a loss label, `-<targets>` unless attention (lovasz-authors)."
    )
    control: str = config_field(BASELINE, help="Arm compared with (default ce on attention targets).")
    metric: str | None = config_field(None, help="Per-problem metric; default the dataset's primary metric (EM).")
    family: str = config_field(DEFAULT_FAMILY, help="primary / exploratory: tested alone; other names: Holm families.")
    name: str | None = config_field(None, help="Short name in tables (default `treatment vs control`).")
    margin_points: float | None = config_field(None, help="Equivalence margin ±m points (default: the plan's).")
    planned_seeds: int | None = config_field(
        None,
        help="Paired seeds the plan's analysis is for; with fewer finished, the tests are printed but the verdict is "
        "`interim (k of n seeds)` (no stopping on an early look).",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.treatment, str) or not self.treatment.strip():
            raise ValueError("comparisons: every comparison needs a `treatment` arm, e.g. {treatment: lovasz}")
        if self.margin_points is not None and not self.margin_points > 0:
            raise ValueError(f"comparisons.margin_points: a positive number of points, got {self.margin_points!r}")
        if self.planned_seeds is not None and (isinstance(self.planned_seeds, bool) or self.planned_seeds < 1):
            raise ValueError(
                f"comparisons.planned_seeds: a positive number of seeds or null, got {self.planned_seeds!r}"
            )

    @property
    def label(self) -> str:
        return self.name or f"{self.treatment} vs {self.control}"


@dataclasses.dataclass
class StudyPlan:
    """The analysis settings of a study (``configs/study/*.yaml`` mirror it; ``docs/study-plan.md`` explains them)."""

    alpha: float = config_field(ALPHA, help="Significance level of every test (two-sided), and of TOST.")
    power: float = config_field(POWER, help="Power at which the minimum detectable effect is computed.")
    margin_points: float = config_field(DEFAULT_MARGIN_POINTS, help="Equivalence margin ±m, in points.")
    planning_sd_points: float | None = config_field(
        None, help="Planned SD of the per-seed difference (points) for mde_points; None: the observed SD."
    )
    comparisons: list[Comparison] = config_field(
        [], help="The comparisons; empty: every arm vs CE on the same LoRA targets, one Holm family."
    )
    # Pre-registered plans (configs/study/*.yaml) set it; the relative change's interval is no bootstrap any more.
    bootstrap_resamples: int = config_field(2000, help="Unused: kept so that plans written before 2026-12-02 parse.")

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise ValueError(f"alpha and power must lie in (0, 1), got {self.alpha} and {self.power}")
        if not self.margin_points > 0:
            raise ValueError(f"margin_points: a positive number of points, got {self.margin_points!r}")
        if self.planning_sd_points is not None and not self.planning_sd_points > 0:
            raise ValueError(f"planning_sd_points: a positive SD in points or null, got {self.planning_sd_points!r}")
        if self.bootstrap_resamples < 1:
            raise ValueError(f"bootstrap_resamples: at least 1, got {self.bootstrap_resamples}")
        self.comparisons = [c if isinstance(c, Comparison) else Comparison(**c) for c in self.comparisons]


def load_plan(path: str | Path) -> StudyPlan:
    """A :class:`StudyPlan` from a YAML file (unknown keys and bad values are ``ValueError`` naming them)."""
    from segloss.config import config_from_values, load_yaml

    return config_from_values(StudyPlan, load_yaml(path), str(path))


# -- the tests (pure functions over arrays) ------------------------------------------------------------------------
def seed_level_test(
    treatment: np.ndarray | Sequence[float], control: np.ndarray | Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paired t-test over seeds: ``(mean d, CI low, CI high, p, SD of d)`` with ``d = treatment − control``.

    ``treatment``, ``control``: per-seed scores ``[..., S]`` (the same seeds in the same order); the test runs along
    the last axis and broadcasts over the others (a batch of simulated studies in one call). Fewer than 2 seeds: NaN.
    """
    t, c = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    d = t - c  # [..., S]
    nan = np.full(d.shape[:-1], np.nan)
    if d.shape[-1] < 2:
        return d.mean(axis=-1) if d.shape[-1] else nan, nan, nan, nan, nan
    from scipy import stats

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # identical seeds: scipy warns, the p-value is NaN
        result = stats.ttest_rel(t, c, axis=-1)
        interval = result.confidence_interval(confidence)
    return d.mean(axis=-1), interval.low, interval.high, result.pvalue, d.std(axis=-1, ddof=1)


def equivalence_p(treatment: Sequence[float], control: Sequence[float], margin: float) -> float | None:
    """TOST p-value that ``|mean(treatment − control)| < margin`` (per-seed scores; statsmodels ``ttost_paired``)."""
    t, c = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if t.size < 2:
        return None
    from statsmodels.stats.weightstats import ttost_paired

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        p, _, _ = ttost_paired(t, c, -margin, margin)
    return _number(p)


def clustered_difference(
    treatment: np.ndarray, control: np.ndarray, *, confidence: float = CONFIDENCE
) -> dict[str, float | None] | None:
    """OLS ``correct ~ treatment + seed + problem`` on two ``[S, N]`` score matrices (same seeds and problems), with
    two-way cluster-robust (seed, problem) standard errors: ``{"diff", "ci_low", "ci_high", "p_value"}``.

    None with fewer than 2 seeds or 2 problems (no cluster structure to estimate)."""
    a, b = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    n_seeds, n_items = a.shape
    if n_seeds < 2 or n_items < 2:
        return None
    seed_idx = np.tile(np.repeat(np.arange(n_seeds), n_items), 2)  # [2SN]
    item_idx = np.tile(np.tile(np.arange(n_items), n_seeds), 2)  # [2SN]
    arm = np.repeat([1.0, 0.0], n_seeds * n_items)  # [2SN]
    design = np.column_stack(
        [
            np.ones_like(arm),
            arm,
            (seed_idx[:, None] == np.arange(1, n_seeds)).astype(np.float64),  # seed effects (first seed: base)
            (item_idx[:, None] == np.arange(1, n_items)).astype(np.float64),  # problem effects
        ]
    )
    y = np.concatenate([a.ravel(), b.ravel()])
    diff, low, high, p = cluster_robust_coefficient(y, design, [seed_idx, item_idx], 1, confidence=confidence)
    return {"diff": diff, "ci_low": low, "ci_high": high, "p_value": p}


def clustered_mean(scores: np.ndarray, *, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of a ``[S, N]`` score matrix and its CI, with standard errors clustered by seed and by problem (one way
    when there is one seed or one problem; a zero-width interval for a single value or no variation)."""
    m = np.asarray(scores, dtype=np.float64)
    mean = float(m.mean())
    n_seeds, n_items = m.shape
    groups = [np.repeat(np.arange(n_seeds), n_items), np.tile(np.arange(n_items), n_seeds)]
    groups = [g for g, n in zip(groups, (n_seeds, n_items), strict=True) if n > 1]
    if not groups or np.all(m == m.flat[0]):
        return mean, mean, mean
    _, low, high, _ = cluster_robust_coefficient(m.ravel(), np.ones((m.size, 1)), groups, 0, confidence=confidence)
    return mean, mean if low is None else low, mean if high is None else high


def cluster_robust_coefficient(
    y: np.ndarray, design: np.ndarray, groups: Sequence[np.ndarray], column: int, *, confidence: float = CONFIDENCE
) -> tuple[float, float | None, float | None, float | None]:
    """OLS coefficient ``column`` with its CI and p from cluster-robust (CRV1) standard errors, one- or two-way
    (statsmodels ``cov_cluster`` / ``cov_cluster_2groups``), t with (fewest clusters − 1) degrees of freedom as in
    statsmodels' ``cov_type="cluster"``. The two-way variance (by seed + by problem − by their intersection) can
    come out negative in small samples; the larger one-way variance is used then (Cameron, Gelbach & Miller 2011)."""
    from scipy import stats
    from statsmodels.regression.linear_model import OLS  # not statsmodels.api: it takes seconds to import
    from statsmodels.stats.sandwich_covariance import cov_cluster, cov_cluster_2groups

    fit = OLS(y, design).fit()
    estimate = float(fit.params[column])
    if len(groups) == 2:
        both, first, second = cov_cluster_2groups(fit, groups[0], groups[1])
        variance = float(both[column, column])
        if not variance > 0:
            variance = max(float(first[column, column]), float(second[column, column]))
    else:
        variance = float(cov_cluster(fit, groups[0])[column, column])
    df = min(len(np.unique(g)) for g in groups) - 1
    if not variance > 0 or df < 1:
        return estimate, None, None, None
    se = variance**0.5
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    return estimate, estimate - half, estimate + half, p


def relative_change(
    treatment: np.ndarray | Sequence[float], control: np.ndarray | Sequence[float], *, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """``mean(treatment) / mean(control) − 1`` over paired seeds, and its delta-method t-interval.

    With ``d_s`` = treatment − control per seed, the ratio is ``d̄ / c̄``; its variance is
    ``V(d̄)/c̄² − 2 d̄ C(d̄, c̄)/c̄³ + d̄² V(c̄)/c̄⁴`` from the seed-level (co)variances of the two means, and the interval
    uses the t quantile with S − 1 degrees of freedom, like the difference in points. ``{"point", "ci"}``: ``point``
    is None when the control mean is 0 (no ratio); ``ci`` is None then and with fewer than 2 seeds.

    The pre-registered percentile bootstrap over seeds was too narrow with few seeds: on simulated null studies it
    held the true value in 78 % of them at 3 seeds and 91 % at 10, this interval in 95 % at both
    (``benchmarks/bench_relative_ci.py``; docs/results.md names the deviation).
    """
    t, c = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)  # [S] each
    if c.size == 0 or not c.mean() > 0:
        return {"point": None, "ci": None}
    diff = t - c  # [S]
    c_mean, d_mean = float(c.mean()), float(diff.mean())
    point = d_mean / c_mean
    if c.size < 2:
        return {"point": point, "ci": None}
    from scipy import stats

    cov = np.cov(np.vstack([diff, c]), ddof=1) / c.size  # [2, 2]: (co)variances of the two means
    var = cov[0, 0] / c_mean**2 - 2 * d_mean * cov[0, 1] / c_mean**3 + d_mean**2 * cov[1, 1] / c_mean**4
    half = float(stats.t.ppf((1 + confidence) / 2, c.size - 1)) * math.sqrt(max(float(var), 0.0))
    return {"point": point, "ci": [point - half, point + half]}


def mde_points(n_seeds: int, sd_points: float | None, *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Minimum detectable effect (points) of the two-sided paired t-test over ``n_seeds`` at ``alpha`` and ``power``
    for per-seed differences with SD ``sd_points``: ``TTestPower().solve_power(...) · sd``; None below 2 seeds."""
    if n_seeds < 2 or sd_points is None or not math.isfinite(sd_points) or sd_points <= 0:
        return None
    from statsmodels.stats.power import TTestPower

    effect = TTestPower().solve_power(effect_size=None, nobs=n_seeds, alpha=alpha, power=power)
    return float(np.asarray(effect).item() * sd_points)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels ``multipletests``), None left out of the family and kept as None."""
    present = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    if present:
        from statsmodels.stats.multitest import multipletests

        values = multipletests([p_values[i] for i in present], method="holm")[1]
        for i, p in zip(present, values, strict=True):
            adjusted[i] = float(p)
    return adjusted


def _number(value: Any) -> float | None:
    value = float(np.asarray(value).item())
    return value if math.isfinite(value) else None


# -- the study: arms and comparisons per (model, dataset) ----------------------------------------------------------
Arms = dict[str, dict[int, CellResult]]  # arm → seed → cell


def group_arms(results: Sequence[CellResult]) -> dict[tuple[str, str], Arms]:
    """``{(model, dataset): {arm: {seed: cell}}}`` in first-seen order, CE before the other arms of its targets."""
    groups: dict[tuple[str, str], Arms] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        groups[(r.model, r.dataset)][r.arm][r.seed] = r
    return {key: _ordered(arms) for key, arms in groups.items()}


def _ordered(arms: Arms) -> Arms:
    """Arms on attention targets first, then each other target set as first seen; CE first within each."""
    first = {arm: next(iter(cells.values())) for arm, cells in arms.items()}
    targets = list(dict.fromkeys(c.lora_targets for c in first.values() if c.lora_targets != ATTENTION))
    order = {arm: i for i, arm in enumerate(arms)}

    def rank(arm: str) -> tuple[int, bool, int]:
        cell = first[arm]
        target = -1 if cell.lora_targets == ATTENTION else targets.index(cell.lora_targets)
        return target, cell.loss != BASELINE, order[arm]

    return {arm: dict(sorted(arms[arm].items())) for arm in sorted(arms, key=rank)}


def primary_metric(arms: Arms) -> str:
    """The first of :data:`PRIMARY_METRICS` that the cells report (``exact_match`` when none does)."""
    present = {m for cells in arms.values() for cell in cells.values() for m in cell.metrics}
    return next((m for m in PRIMARY_METRICS if m in present), "exact_match")


def default_comparisons(arms: Arms) -> list[Comparison]:
    """Each arm vs CE on the same LoRA targets (when that CE arm finished), one Holm family."""
    out = []
    for arm, cells in arms.items():
        cell = next(iter(cells.values()))
        control = arm_name(BASELINE, cell.lora_targets)
        if arm != control and control in arms:
            out.append(Comparison(treatment=arm, control=control))
    return out


def unit_matrix(cells: Sequence[CellResult], metric: str) -> tuple[np.ndarray, list[str]]:
    """``[S, N]`` scores of ``cells`` on the problems they all have, and those problem ids. A cell without
    per-problem scores makes every row its cell's mean (``N = 1``, id ``"cell"``): each seed is then one unit."""
    per_cell = [{k: v[metric] for k, v in c.scores.items() if metric in v} for c in cells]
    if cells and all(per_cell):
        ids = sorted(set.intersection(*(set(s) for s in per_cell)))
        if ids:
            return np.array([[s[i] for i in ids] for s in per_cell]), ids
    means = [c.metrics.get(metric) for c in cells]
    if not all(finite(m) for m in means):
        return np.zeros((0, 0)), []
    return np.array([[m] for m in means], dtype=np.float64), ["cell"]


def arm_entry(cells: dict[int, CellResult], metric: str) -> dict[str, Any]:
    """An arm's level: ``n_seeds``, ``em_mean`` with its two-way cluster-robust CI, EM per seed, side metrics."""
    matrix, ids = unit_matrix(list(cells.values()), metric)
    first = next(iter(cells.values()))
    entry: dict[str, Any] = {
        "loss": first.loss,
        "lora_targets": first.lora_targets,
        "n_seeds": len(cells),
        "seeds": sorted(cells),
        "n_problems": len(ids) if ids != ["cell"] else 0,
        "em_mean": None,
        "em_ci": None,
        "em_per_seed": {},
        **side_means(cells),
    }
    if matrix.size:
        mean, low, high = clustered_mean(matrix)
        entry.update(em_mean=mean, em_ci=[max(0.0, low), min(1.0, high)])  # primary metrics are proportions
        entry["em_per_seed"] = {s: float(row.mean()) for s, row in zip(cells, matrix, strict=True)}
    return entry


def side_means(cells: dict[int, CellResult]) -> dict[str, float | None]:
    """Means over seeds of the other metrics and of the training cost (seconds; tokens from train_summary.json)."""
    out: dict[str, float | None] = {}
    for name in SIDE_METRICS:
        out[name] = mean_or_none(c.metrics[name] for c in cells.values() if finite(c.metrics.get(name)))
    # A grid's cells time their training in the metrics; a train run's summary has its wall time.
    seconds = [c.metrics.get("train_seconds", c.train.get("wall_time_s")) for c in cells.values()]
    out["train_seconds"] = mean_or_none(t for t in seconds if finite(t))
    out["train_tokens"] = mean_or_none(
        float(c.train["tokens"]) for c in cells.values() if finite(c.train.get("tokens"))
    )
    return out


def mean_or_none(values: Any) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _empty_record(comparison: Comparison, metric: str, margin: float, seeds: list[int]) -> dict[str, Any]:
    """Every key of a comparison's record, before any test ran."""
    untested = [
        "treatment_mean",
        "control_mean",
        "diff_points",
        "diff_ci_points",
        "sd_points",
        "p_value_raw",
        "p_value",
        "significant",
        "model",
        "rel_change",
        "rel_change_ci",
        "seeds_vary",
    ]
    nothing = dict.fromkeys(untested)
    return {
        "name": comparison.label,
        "treatment": comparison.treatment,
        "control": comparison.control,
        "family": comparison.family,
        "metric": metric,
        "lower_is_better": metric in LOWER_IS_BETTER,
        "n_seeds": len(seeds),
        "planned_seeds": comparison.planned_seeds,
        "seeds": seeds,
        "n_problems": 0,
        **nothing,
        "equivalence": {"margin_points": margin, "p_value": None, "verdict": "inconclusive"},
    }


def compare(arms: Arms, comparison: Comparison, metric: str, plan: StudyPlan) -> dict[str, Any]:
    """The tests of one comparison on the seeds where both arms finished (see the module docstring)."""
    metric = comparison.metric or metric
    margin = comparison.margin_points or plan.margin_points
    treated, controls = arms.get(comparison.treatment, {}), arms.get(comparison.control, {})
    seeds = sorted(set(treated) & set(controls))
    record = _empty_record(comparison, metric, margin, seeds)
    if not seeds:
        return record
    matrix, ids = unit_matrix([treated[s] for s in seeds] + [controls[s] for s in seeds], metric)
    if not matrix.size:
        return record
    a, b = matrix[: len(seeds)], matrix[len(seeds) :]  # [S, N] each
    per_a, per_b = a.mean(axis=1), b.mean(axis=1)  # [S]
    diff, low, high, p, sd = seed_level_test(per_a, per_b)
    # Every seed with the same difference (e.g. both arms at 0 % everywhere): the t statistics are 0/0 or ±∞, so
    # neither the test nor TOST says anything; the comparison stays inconclusive.
    varies = _number(sd) is not None and float(sd) > 1e-12
    record.update(
        n_problems=len(ids) if ids != ["cell"] else 0,
        treatment_mean=float(per_a.mean()),
        control_mean=float(per_b.mean()),
        diff_points=100 * float(diff),
        diff_ci_points=None if _number(low) is None or not varies else [100 * float(low), 100 * float(high)],
        sd_points=None if _number(sd) is None else 100 * float(sd),
        p_value_raw=_number(p) if varies else None,
        seeds_vary=varies,
    )
    record["equivalence"]["p_value"] = equivalence_p(per_a, per_b, margin / 100) if varies else None
    model = clustered_difference(a, b) if ids != ["cell"] else None
    if model is not None:
        record["model"] = {
            "diff_points": 100 * float(model["diff"] or 0.0),
            "ci_points": None if model["ci_low"] is None else [100 * model["ci_low"], 100 * (model["ci_high"] or 0)],
            "p_value": model["p_value"],
        }
    rel = relative_change(per_a, per_b)
    record.update(rel_change=rel["point"], rel_change_ci=rel["ci"])
    return record


def decide(records: list[dict[str, Any]], plan: StudyPlan) -> None:
    """Holm-adjust each family's p-values, then give every comparison its MDE, equivalence and verdict (in place)."""
    families: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        families[r["family"]].append(r)
    for family, members in families.items():
        alone = family in UNADJUSTED_FAMILIES
        adjusted = [r["p_value_raw"] for r in members] if alone else holm([r["p_value_raw"] for r in members])
        tested = sum(r["p_value_raw"] is not None for r in members)
        for r, p in zip(members, adjusted, strict=True):
            r["p_value"] = p
            r["adjusted"] = "none" if alone else f"holm over {tested}"
            r["significant"] = None if p is None else p < plan.alpha
            _power(r, plan, plan.alpha if alone else plan.alpha / max(1, tested))
            _verdict(r, plan)


def _power(record: dict[str, Any], plan: StudyPlan, alpha: float) -> None:
    n = record["n_seeds"]
    record["mde_alpha"] = alpha
    record["mde_observed_points"] = mde_points(n, record["sd_points"], alpha=alpha, power=plan.power)
    planned = plan.planning_sd_points
    record["mde_points"] = (
        record["mde_observed_points"] if planned is None else mde_points(n, planned, alpha=alpha, power=plan.power)
    )
    record["mde_basis"] = "observed SD" if planned is None else f"planned SD {planned:g} points"


def _verdict(record: dict[str, Any], plan: StudyPlan) -> None:
    eq = record["equivalence"]
    margin = f"±{eq['margin_points']:g}"
    if record["p_value"] is not None and record["significant"]:
        better = (record["diff_points"] > 0) != record["lower_is_better"]
        record["verdict"], eq["verdict"] = ("shown better" if better else "shown worse"), "different"
    elif eq["p_value"] is not None and eq["p_value"] < plan.alpha:
        record["verdict"], eq["verdict"] = f"shown equivalent within {margin}", f"equivalent within {margin}"
    else:
        compared = record["diff_points"] is not None
        record["verdict"], eq["verdict"] = ("inconclusive" if compared else "not compared"), "inconclusive"
    planned = record["planned_seeds"]
    if planned is not None and record["diff_points"] is not None and record["n_seeds"] < planned:
        # An early look decides nothing: the plan's α holds for its analysis at the planned seeds only.
        record["verdict"] = eq["verdict"] = f"interim ({record['n_seeds']} of {planned} seeds)"
    model = record["model"]
    if model is not None and model["p_value"] is not None and record["p_value_raw"] is not None:
        model["agrees"] = (model["p_value"] < plan.alpha) == (record["p_value_raw"] < plan.alpha)
    record["fragile"] = bool(model and model.get("agrees") is False)


def study(
    results: Sequence[CellResult],
    plan: StudyPlan | None = None,
    *,
    metrics: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Per (model, dataset): every arm's level (:func:`arm_entry`) and every comparison (:func:`compare`, decided by
    :func:`decide`); each arm's entry also carries the keys of its comparison with CE (``em_diff_points``,
    ``em_diff_ci``, ``p_value``, ``equivalence``, ``mde_points``, ``rel_change_vs_ce``, ``verdict`` …).

    Items: ``{"model", "dataset", "metric", "n_problems", "losses": {arm: entry}, "comparisons": [...]}``; only
    (model, dataset) pairs with a CE arm (or with a plan's comparison) appear. ``metrics`` maps a dataset to the
    metric compared (default: its primary metric)."""
    from threadpoolctl import threadpool_limits

    plan = plan or StudyPlan()
    with threadpool_limits(limits=1):  # small fits: BLAS threads on busy cores make them 10-40× slower, not faster
        return [item for key, arms in group_arms(results).items() if (item := _study_item(key, arms, plan, metrics))]


def _study_item(
    key: tuple[str, str], arms: Arms, plan: StudyPlan, metrics: dict[str, str] | None
) -> dict[str, Any] | None:
    """One (model, dataset) study; None without a CE arm and without a plan's comparisons."""
    model, dataset = key
    metric = (metrics or {}).get(dataset) or primary_metric(arms)
    has_baseline = any(cell.loss == BASELINE for cells in arms.values() for cell in cells.values())
    if not (has_baseline or plan.comparisons):
        return None
    comparisons = list(plan.comparisons) or default_comparisons(arms)
    entries = {arm: arm_entry(cells, metric) for arm, cells in arms.items()}
    records = [compare(arms, c, metric, plan) for c in comparisons]
    decide(records, plan)
    for arm, entry in entries.items():
        _attach(entry, arm, next((r for r in records if r["treatment"] == arm and r["metric"] == metric), None))
    n_problems = max((e["n_problems"] for e in entries.values()), default=0)
    return {
        "model": model,
        "dataset": dataset,
        "metric": metric,
        "n_problems": n_problems,
        "losses": entries,
        "comparisons": records,
    }


def _attach(entry: dict[str, Any], arm: str, record: dict[str, Any] | None) -> None:
    """Copy an arm's comparison with CE into its entry, under the keys the report and summary.json print."""
    entry.update(
        {
            "compared_with": None if record is None else record["control"],
            "em_diff_points": None,
            "em_diff_ci": None,
            "difference": None,
            "p_value_raw": None,
            "p_value": None,
            "significant": None,
            "equivalence": None,
            "mde_points": None,
            "mde_observed_points": None,
            "rel_change_vs_ce": None,
            "rel_change_ci": None,
            "fragile": False,
            "outcome": None,
        }
    )
    if record is None:
        return
    entry.update(
        em_diff_points=record["diff_points"],
        em_diff_ci=record["diff_ci_points"],
        difference=None if record["diff_points"] is None else record["diff_points"] / 100,
        p_value_raw=record["p_value_raw"],
        p_value=record["p_value"],
        significant=record["significant"],
        equivalence=record["equivalence"],
        mde_points=record["mde_points"],
        mde_observed_points=record["mde_observed_points"],
        rel_change_vs_ce=record["rel_change"],
        rel_change_ci=record["rel_change_ci"],
        fragile=record["fragile"],
        outcome=record["verdict"],
    )


# -- descriptive tables ----------------------------------------------------------------------------------------------
def aggregate(results: Sequence[CellResult], *, seed: int = 0) -> list[dict[str, Any]]:
    """One record per (model, dataset, arm): ``seeds`` and ``{metric: {"mean", "ci_low", "ci_high", "n"}}`` of the
    cells' metric means over seeds (percentile bootstrap over the seeds: descriptive, not a test)."""
    from segloss.metrics.stats import bootstrap_ci

    records = []
    for (model, dataset), arms in group_arms(results).items():
        for arm, cells in arms.items():
            names = list(dict.fromkeys(k for c in cells.values() for k in c.metrics))
            stats: dict[str, dict[str, float]] = {}
            for name in names:
                values = [c.metrics[name] for c in cells.values() if finite(c.metrics.get(name))]
                if values:
                    mean, low, high = bootstrap_ci(values, seed=seed)
                    stats[name] = {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values)}
            records.append({"model": model, "dataset": dataset, "loss": arm, "seeds": sorted(cells), "metrics": stats})
    return records


def headline(items: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The paper's headline statistic: per (model, dataset) the arm with the best mean score among those compared
    with CE, and the mean of those arms' relative changes. Picked after seeing the results (flatters the best)."""
    best = []
    for item in items:
        compared = [(arm, e) for arm, e in item["losses"].items() if e.get("rel_change_vs_ce") is not None]
        if compared:
            arm, e = max(compared, key=lambda pair: pair[1]["em_mean"] or 0.0)
            keys = ("rel_change_vs_ce", "em_diff_points", "p_value", "significant", "n_seeds", "outcome")
            best.append({"model": item["model"], "dataset": item["dataset"], "loss": arm, **{k: e[k] for k in keys}})
    if not best:
        return None
    gain = sum(b["rel_change_vs_ce"] for b in best) / len(best)
    return {"mean_relative_gain": gain, "pairs": len(best), "best": best}


# -- simulation (tests and benchmarks/bench_analysis.py) -------------------------------------------------------------
def simulate_crossed(
    rng: np.random.Generator,
    n_studies: int,
    n_seeds: int,
    n_items: int,
    effect: float = 0.0,
    *,
    seed_sd: float = 0.3,
    seed_by_arm_sd: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_studies`` simulated crossed studies: 0/1 scores ``[R, S, N]`` of a treatment and a control arm.

    On the logit scale a problem's difficulty is drawn U-shaped (a Beta(0.5, 0.5) success probability: about 25 %
    of the paired outcomes discordant, as docs/study-plan.md assumes), a seed effect (SD ``seed_sd``) is shared by
    both arms, and a seed × arm effect (SD ``seed_by_arm_sd``) is not. The treatment adds ``effect`` (a fraction:
    0.035 is 3.5 points) spread over the problems in proportion to the room each has, so no probability leaves
    [0, 1] and the expected difference is ``effect``."""
    from scipy.special import expit, logit

    difficulty = logit(np.clip(rng.beta(0.5, 0.5, size=(n_studies, 1, n_items)), 1e-4, 1 - 1e-4))  # [R, 1, N]
    seed = rng.normal(0.0, seed_sd, size=(n_studies, n_seeds, 1))  # [R, S, 1]
    seed_by_arm = rng.normal(0.0, seed_by_arm_sd, size=(2, n_studies, n_seeds, 1))
    control = expit(difficulty + seed + seed_by_arm[0])  # [R, S, N]
    treated = expit(difficulty + seed + seed_by_arm[1])
    treated = treated + effect * (1 - treated) / (1 - treated).mean()
    return (rng.random(treated.shape) < treated).astype(np.float64), (rng.random(control.shape) < control).astype(
        np.float64
    )
