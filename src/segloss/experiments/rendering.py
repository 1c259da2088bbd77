"""The report's words and tables: verdict sentences, Markdown tables, ``table.csv`` and ``summary.json``.

Everything here formats numbers that :mod:`segloss.experiments.analysis` computed; nothing is computed again.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from segloss.experiments.analysis import BASELINE, StudyPlan
from segloss.metrics.formulas import STEP_ERRORS

MAIN_METRICS = ("exact_match", "accuracy", "acc", "acc_norm", "iou", "missing_steps", "extra_steps")
PERCENT_METRICS = ("exact_match", "iou", "accuracy", "acc", "acc_norm", "well_formed")
LABELS = {
    "exact_match": "EM",
    "iou": "IoU",
    "accuracy": "Acc",
    "acc": "Acc (LL)",
    "acc_norm": "Acc norm (LL)",
    "missing_steps": "Missing",
    "extra_steps": "Extra",
    "repetitions": "Repeated",
    "wrong_operators": "Wrong op.",
    "inverted_operands": "Inverted",
    "calculation_errors": "Calc. err.",
}
METHOD = (
    "Per comparison, on the seeds where both arms finished and the problems all their cells share: a paired t-test "
    "over seeds of the per-seed difference (`scipy.stats.ttest_rel`; its t-interval is the CI of the difference), "
    "Holm-adjusted within each family except the primary and exploratory comparisons; an equivalence test (TOST, "
    "`statsmodels` `ttost_paired`) against the margin; and, as a check, OLS `correct ~ arm + seed + problem` with "
    "standard errors clustered by seed and by problem (`statsmodels`). Verdict: shown better/worse when p < α; else "
    "shown equivalent within ±m when the TOST p < α; else inconclusive. Differences are in points (percentage "
    "points); the MDE is the difference the seed-level test detects with 80 % power. The relative change is "
    "secondary: a delta-method t-interval over seeds (none when the control mean is 0)."
)


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


# -- sentences -------------------------------------------------------------------------------------------------------
def comparison_sentence(record: dict[str, Any]) -> str:
    """One plain sentence per comparison: the verdict, the difference with its CI, the tests and the MDE."""
    who = f"{record['treatment']} vs {record['control']}"
    if record["n_seeds"] == 0:
        return f"{record['treatment']}: not compared with {record['control']} — no seed where both finished."
    if record["diff_points"] is None:
        return f"{record['treatment']}: not compared with {record['control']} — no {label(record['metric'])} scores."
    change = f"{record['diff_points']:+.1f} points of {label(record['metric'])}"
    if record["diff_ci_points"] is not None:
        low, high = record["diff_ci_points"]
        change += f" [95 % CI {low:+.1f}, {high:+.1f}]"
    parts = [f"{change} over {record['n_seeds']} paired seed(s)"]
    if record["p_value"] is None and record["n_seeds"] < 2:
        parts.append("no test with fewer than 2 paired seeds")
    elif record["p_value"] is None:
        parts.append("no test: the difference is the same on every seed (no seed-to-seed variation)")
    else:
        holm = "" if record.get("adjusted", "none") == "none" else f", {record['adjusted']}"
        parts.append(f"p = {record['p_value']:.3g}{holm}")
    eq = record["equivalence"]
    if eq["p_value"] is not None:
        parts.append(f"TOST ±{eq['margin_points']:g}: p = {eq['p_value']:.3g}")
    if record.get("mde_points") is not None:
        parts.append(f"MDE {record['mde_points']:.1f} points")
    if record.get("fragile"):
        parts.append(f"the cluster-robust model disagrees (p = {record['model']['p_value']:.3g}): fragile")
    verdict = record["verdict"]
    return f"{record['treatment']}: {verdict} ({who}; " + "; ".join(parts) + ")."


def baseline_sentence(arm: str, entry: dict[str, Any], metric: str) -> str:
    if entry["em_mean"] is None:
        return f"{arm}: no finished cell with {label(metric)} scores."
    return f"{arm}: the baseline, {100 * entry['em_mean']:.1f} % {label(metric)} over {entry['n_seeds']} seed(s)."


def describe(items: Sequence[dict[str, Any]]) -> None:
    """Give every comparison its ``sentence`` and every arm its ``verdict`` sentence (in place)."""
    for item in items:
        for record in item["comparisons"]:
            record["sentence"] = comparison_sentence(record)
        for arm, entry in item["losses"].items():
            mine = next(
                (r for r in item["comparisons"] if r["treatment"] == arm and r["metric"] == item["metric"]), None
            )
            if mine is not None:
                entry["verdict"] = mine["sentence"]
            elif entry["loss"] == BASELINE or entry["em_mean"] is None:
                entry["verdict"] = baseline_sentence(arm, entry, item["metric"])
            else:
                entry["verdict"] = f"{arm}: not compared (no comparison names it)."


# -- tables ----------------------------------------------------------------------------------------------------------
def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def num(value: float | None, scale: float = 1.0, digits: int = 1, *, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * scale:{'+' if sign else ''}.{digits}f}"


def interval(values: Sequence[float] | None, scale: float = 1.0, digits: int = 1, *, sign: bool = False) -> str:
    if not values:
        return "–"
    return f"[{num(values[0], scale, digits, sign=sign)}, {num(values[1], scale, digits, sign=sign)}]"


def p_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def relative_text(value: float | None, ci: Sequence[float] | None, compared: bool) -> str:
    """The relative change with its interval; a compared pair without a ratio had a control mean of 0."""
    if value is None:
        return "n/a (control 0)" if compared else "–"
    return f"{100 * value:+.1f} % {interval(ci, 100.0, sign=True)}"


def format_study_table(item: dict[str, Any]) -> str:
    """The Markdown table of one (model, dataset) study: one row per arm (CE first); the demo prints it.

    Per arm: the mean score with its CI and per seed, then its comparison with CE on the same LoRA targets: the
    difference in points with its CI, p (Holm-adjusted), the number of paired seeds, the equivalence verdict (TOST
    p), the MDE and the relative change with its interval (n/a for a CE mean of 0)."""
    metric = label(item["metric"])
    header = [
        "Loss",
        f"{metric} % [95 % CI]",
        f"{metric} % per seed",
        "vs CE [95 % CI]",
        "p (Holm)",
        "Seeds",
        "Equivalence (TOST p)",
        "MDE",
        "Relative [95 % CI]",
        "IoU %",
        "Missing",
        "Extra",
        "Train s",
    ]
    rows = []
    for arm, e in item["losses"].items():
        level = "–" if e["em_mean"] is None else f"{num(e['em_mean'], 100.0)} {interval(e['em_ci'], 100.0)}"
        per_seed = ", ".join(f"{100 * v:.1f}" for v in e["em_per_seed"].values()) or "–"
        diff, p, eq_text, mde, rel = "—", "—", "—", "—", "—"
        if e.get("compared_with"):
            eq = e["equivalence"]
            diff = f"{num(e['em_diff_points'], sign=True)} pts {interval(e['em_diff_ci'], sign=True)}"
            if e["compared_with"] != BASELINE:
                diff += f" vs {e['compared_with']}"
            p, eq_text = p_text(e["p_value"]), f"{eq['verdict']} ({p_text(eq['p_value'])})"
            mde = num(e["mde_points"])
            rel = relative_text(e["rel_change_vs_ce"], e["rel_change_ci"], e["em_diff_points"] is not None)
        side = [num(e["iou"], 100.0), num(e["missing_steps"], digits=2), num(e["extra_steps"], digits=2)]
        seeds = str(e["n_seeds"])
        rows.append(
            [arm, level, per_seed, diff, p, seeds, eq_text, mde, rel, *side, num(e["train_seconds"], digits=0)]
        )
    return "\n".join(md_table(header, rows))


def format_comparisons_table(item: dict[str, Any]) -> str:
    """The Markdown table of one study's comparisons (the plan's, or each arm vs CE), with every test."""
    header = [
        "Comparison",
        "Family",
        "Metric",
        "Seeds × problems",
        "Δ points [95 % CI]",
        "p",
        "p adjusted",
        "TOST p (±m)",
        "Model Δ [95 % CI], p",
        "MDE points (plan / observed)",
        "Relative [95 % CI]",
        "Verdict",
    ]
    rows = []
    for r in item["comparisons"]:
        model = r["model"]
        model_text = "–"
        if model is not None:
            model_text = f"{num(model['diff_points'], sign=True)} {interval(model['ci_points'], sign=True)}"
            model_text += f", {p_text(model['p_value'])}"
        eq = r["equivalence"]
        rows.append(
            [
                r["name"],
                r["family"],
                label(r["metric"]),
                f"{r['n_seeds']} × {r['n_problems'] or 1}" if r["diff_points"] is not None else "–",
                f"{num(r['diff_points'], sign=True)} {interval(r['diff_ci_points'], sign=True)}",
                p_text(r["p_value_raw"]),
                p_text(r["p_value"]) if r.get("adjusted", "none") != "none" else "—",
                f"{p_text(eq['p_value'])} (±{eq['margin_points']:g})",
                model_text,
                f"{num(r.get('mde_points'))} / {num(r.get('mde_observed_points'))}",
                relative_text(r["rel_change"], r["rel_change_ci"], r["diff_points"] is not None),
                r["verdict"] + (" (fragile)" if r.get("fragile") else ""),
            ]
        )
    return "\n".join(md_table(header, rows))


def _fmt(stat: dict[str, float] | None, metric: str) -> str:
    if not stat:
        return "–"
    scale, digits = (100.0, 1) if metric in PERCENT_METRICS else (1.0, 3)
    mean, low, high = (stat[k] * scale for k in ("mean", "ci_low", "ci_high"))
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def present(records: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    return [n for n in names if any(n in r["metrics"] for r in records)]


def metric_table(records: Sequence[dict[str, Any]], metrics: Sequence[str]) -> list[str]:
    """Rows model × arm; per dataset one column per metric it reports (mean [CI]); then the number of seeds."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    index = {(r["model"], r["dataset"], r["loss"]): r for r in records}
    columns = [
        (d, m) for d in datasets for m in metrics if any(r["dataset"] == d and m in r["metrics"] for r in records)
    ]
    header = ["Model", "Loss"] + [f"{d} {label(m)}" for d, m in columns] + ["Seeds"]
    rows = []
    for model, arm in dict.fromkeys((r["model"], r["loss"]) for r in records):
        cells = [model, arm]
        for d, m in columns:
            rec = index.get((model, d, arm))
            cells.append(_fmt(rec["metrics"].get(m) if rec else None, m))
        counts = [str(len(index[(model, d, arm)]["seeds"])) for d in datasets if (model, d, arm) in index]
        cells.append("/".join(dict.fromkeys(counts)))  # "3", or "3/2" when datasets differ
        rows.append(cells)
    return md_table(header, rows)


def table_csv(records: Sequence[dict[str, Any]]) -> str:
    """One line per (model, dataset, arm); per metric ``<m>_mean, <m>_ci_low, <m>_ci_high, <m>_n``."""
    names = list(dict.fromkeys(n for r in records for n in r["metrics"]))
    stats = ("mean", "ci_low", "ci_high", "n")
    header = ["model", "dataset", "loss", "n_seeds"] + [f"{n}_{s}" for n in names for s in stats]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        values = [r["metrics"].get(n, {}).get(s, "") for n in names for s in stats]
        writer.writerow([r["model"], r["dataset"], r["loss"], len(r["seeds"]), *values])
    return buffer.getvalue()


# -- summary.json ----------------------------------------------------------------------------------------------------
def study_summary(items: Sequence[dict[str, Any]], plan: StudyPlan) -> dict[str, Any]:
    """The content of ``summary.json``: the method, every study, and its ``losses``/``comparisons`` at the top level
    when there is one study."""
    payload: dict[str, Any] = {
        "alpha": plan.alpha,
        "power": plan.power,
        "margin_points": plan.margin_points,
        "planning_sd_points": plan.planning_sd_points,
        "correction": "holm",
        "test": "paired t-test over seeds of the per-seed difference (scipy.stats.ttest_rel)",
        "ci": "t-interval of the mean per-seed difference; arm means: two-way (seed, problem) cluster-robust",
        "equivalence_test": "TOST, statsmodels.stats.weightstats.ttost_paired, on the per-seed scores",
        "model": "OLS correct ~ arm + seed + problem, two-way cluster-robust SE by seed and problem (statsmodels)",
        "studies": list(items),
    }
    if len(items) == 1:
        keys = ("model", "dataset", "metric", "n_problems", "losses", "comparisons")
        payload.update({k: items[0][k] for k in keys if k != "model"})
        payload["model_name"] = items[0]["model"]
    return payload


# -- the Markdown report ---------------------------------------------------------------------------------------------
def study_lines(items: Sequence[dict[str, Any]], plan: StudyPlan) -> list[str]:
    lines = [
        "## Each loss vs CE",
        "",
        METHOD,
        "",
        f"α = {plan.alpha}; equivalence margin ±{plan.margin_points:g} points.",
        "",
    ]
    if not items:
        return [*lines, "No CE baseline among the finished cells: nothing to compare with.", ""]
    for item in items:
        units = f"{item['n_problems']} problems" if item["n_problems"] else "per-seed means, no predictions"
        lines += [f"### {item['model']} / {item['dataset']} ({units})", "", format_study_table(item), ""]
        if item["comparisons"]:
            lines += ["Comparisons:", "", format_comparisons_table(item), ""]
            lines += [f"- {r['sentence']}" for r in item["comparisons"]] + [""]
        lines += [f"- {e['verdict']}" for arm, e in item["losses"].items() if not e.get("compared_with")] + [""]
    return lines


def headline_lines(head: dict[str, Any] | None) -> list[str]:
    lines = ["## Headline: best loss vs CE", ""]
    if head is None:
        return [*lines, "No loss could be compared with CE (no CE baseline with a non-zero score).", ""]
    lines.append(
        f"Mean relative change of the best loss over CE (the paper's headline statistic): "
        f"**{100 * head['mean_relative_gain']:+.1f} %** over {head['pairs']} model × dataset pair(s). The best loss "
        "is picked after seeing the results, which flatters it; the tests above decide."
    )
    lines.append("")
    for b in head["best"]:
        lines.append(
            f"- {b['model']} / {b['dataset']}: `{b['loss']}`, {100 * b['rel_change_vs_ce']:+.1f} % "
            f"({num(b['em_diff_points'], sign=True)} points, p = {p_text(b['p_value'])}: {b['outcome']})"
        )
    return [*lines, ""]


def sweep_lines(items: Sequence[dict[str, Any]], points: dict) -> list[str]:
    lines: list[str] = []
    for item in items:
        curves = points.get((item["model"], item["dataset"]), {})
        if not any(len(c) >= 3 for c in curves.values()):
            continue
        lams = sorted({lam for c in curves.values() for lam in c}, reverse=True)
        rows = []
        for task, curve in curves.items():
            cells = []
            for lam in lams:
                e = item["losses"].get(curve.get(lam, ""))
                cells.append("–" if not e or e["em_mean"] is None else f"{100 * e['em_mean']:.1f}")
            rows.append([task, *cells])
        metric = label(item["metric"])
        lines += [f"## {metric} against the CE weight: {item['model']} / {item['dataset']}", ""]
        lines += [f"Mean {metric} (%) over seeds; λ = 1 is CE alone, λ = 0 the task loss alone.", ""]
        lines += [*md_table(["Task loss", *(f"λ = {lam:g}" for lam in lams)], rows), ""]
    return lines


def roscoe_lines(roscoe: dict[str, Any]) -> list[str]:
    names = list(dict.fromkeys(n for m in roscoe["means"].values() for n in m))
    rows = [
        [m, d, arm] + [f"{v[n]:.3f}" if v.get(n) is not None else "–" for n in names]
        for (m, d, arm), v in roscoe["means"].items()
    ]
    lines = ["## ROSCOE", "", "Mean ROSCOE scores per arm (all seeds' predictions pooled).", ""]
    lines += [*md_table(["Model", "Dataset", "Loss", *names], rows), ""]
    if roscoe["correlations"]:
        targets = list(dict.fromkeys(t for v in roscoe["correlations"].values() for t in v))
        rows = [[s] + [f"{v.get(t, math.nan):.3f}" for t in targets] for s, v in roscoe["correlations"].items()]
        lines += ["Pearson correlation of each ROSCOE score with the per-example metrics:", ""]
        lines += [*md_table(["Score", *targets], rows), ""]
    return lines


def failed_lines(failed: Sequence[dict[str, Any]]) -> list[str]:
    if not failed:
        return []
    lines = ["## Failed cells", ""]
    for r in failed:
        error = (r.get("error") or "").strip().splitlines()
        cell = f"{r['model']} / {r['dataset']} / {r['loss']} / seed {r['seed']}"
        lines.append(f"- {cell}: {error[-1] if error else 'no error text'}")
    return [*lines, ""]


def render_markdown(
    title: str,
    counts: dict[str, int],
    records: Sequence[dict[str, Any]],
    items: Sequence[dict[str, Any]],
    plan: StudyPlan,
    *,
    head: dict[str, Any] | None = None,
    points: dict | None = None,
    roscoe: dict[str, Any] | None = None,
    plots: dict[str, str] | None = None,
    failed: Sequence[dict[str, Any]] = (),
) -> str:
    """The whole ``report.md``."""
    steps = present(records, STEP_ERRORS)
    lines = [
        f"# {title}",
        "",
        f"Cells: {counts.get('done', 0)} done, {counts.get('failed', 0)} failed, {counts.get('running', 0)} running, "
        f"{counts.get('pending', 0)} pending. Only done cells enter the tables.",
        "",
        "## Results",
        "",
        "Mean over seeds with its 95 % percentile-bootstrap CI over seeds in brackets (descriptive; few seeds make "
        "these intervals rough). EM, IoU and accuracies in %; step errors are means per example (lower is better). "
        "Acc (LL) / Acc norm (LL) are log-likelihood choice scores.",
        "",
        *metric_table(records, MAIN_METRICS),
        "",
    ]
    lines += study_lines(items, plan)
    lines += headline_lines(head)
    lines += sweep_lines(items, points or {})
    if steps:
        lines += ["## Step-error breakdown", "", *metric_table(records, STEP_ERRORS), ""]
    lines += ["## Plots", ""] + [f"![{t}]({name})" for name, t in (plots or {}).items()] + [""]
    if not steps:
        lines += ["No step-error metrics among the cells (e.g. multiple-choice datasets): no step-error plot.", ""]
    if roscoe:
        lines += roscoe_lines(roscoe)
    lines += failed_lines(failed)
    lines += [
        "Files: `summary.json` (every arm and comparison, with all tests), `table.csv` and `table.json` (every metric "
        "with CIs over seeds).",
        "",
    ]
    return "\n".join(lines)
