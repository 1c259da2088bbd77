"""The paper-style report of a grid's result store: ``report.md``, ``table.csv``, ``table.json`` and two PNG plots.

    segloss report --store runs/grid/results.sqlite --output-dir runs/grid/report

From the store's ``done`` cells (one value per metric per seed):

* **table** — rows model × loss, per dataset EM, IoU and step errors as mean [95 % CI] over seeds (percentile
  bootstrap of the seed values, :func:`segloss.metrics.stats.bootstrap_ci`); EM and IoU in %, step errors as the
  mean per example;
* **relative EM change vs CE** per model × dataset × loss, and the headline: for each model × dataset the best loss
  by mean EM, and the mean of those relative gains over CE;
* **paired permutation test** per loss vs CE, paired by seed (:func:`segloss.metrics.stats.paired_permutation_test`,
  two-sided sign flips, exact for few seeds). With n seeds the smallest attainable p is 2/2**n (0.25 for 3 seeds),
  so with fewer than 6 seeds no difference can reach p < 0.05; the report says so;
* **plots** — ``em_per_loss.png`` (EM per loss with CIs) and ``step_errors.png`` (step-error breakdown per loss);
* **ROSCOE** — when the cells' ``predictions.jsonl`` carry ``roscoe_*`` scores: their means and Pearson correlations
  with EM/IoU (:func:`segloss.metrics.roscoe.correlations`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeGuard

from segloss.experiments.store import ResultStore
from segloss.fileio import atomic_write
from segloss.metrics.formulas import STEP_ERRORS

BASELINE = "ce"
ALPHA = 0.05
MAIN_METRICS = ("exact_match", "accuracy", "acc", "acc_norm", "iou", "missing_steps", "extra_steps")
# The metric a dataset is compared on: EM for math sets, generated-letter accuracy for multiple-choice sets.
PRIMARY_METRICS = ("exact_match", "accuracy", "acc_norm", "acc")
PERCENT_METRICS = ("exact_match", "iou", "accuracy", "acc", "acc_norm")
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
ROSCOE_PREFIX = "roscoe_"

Key = tuple[str, str, str]  # (model, dataset, loss)


# -- aggregation ---------------------------------------------------------------------------------------------------
def group_rows(rows: list[dict[str, Any]]) -> dict[Key, dict[int, dict[str, float]]]:
    """``{(model, dataset, loss): {seed: metrics}}`` from the store's done rows, in grid order (CE first)."""
    groups: dict[Key, dict[int, dict[str, float]]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: (r["cell_index"], r["config_hash"])):
        groups[(row["model"], row["dataset"], row["loss"])][int(row["seed"])] = row["metrics"]
    order = _orders(list(groups))
    return dict(sorted(groups.items(), key=lambda kv: tuple(order[i][k] for i, k in enumerate(kv[0]))))


def _orders(keys: list[Key]) -> list[dict[str, int]]:
    """First-seen order of models, datasets and losses, with the CE baseline first among losses."""
    orders: list[dict[str, int]] = [{}, {}, {}]
    for key in keys:
        for i, part in enumerate(key):
            orders[i].setdefault(part, len(orders[i]))
    orders[2] = {loss: (-1 if loss == BASELINE else n) for loss, n in orders[2].items()}
    return orders


def aggregate(groups: dict[Key, dict[int, dict[str, float]]], *, seed: int = 0) -> list[dict[str, Any]]:
    """One record per (model, dataset, loss): ``seeds`` and ``{metric: {"mean", "ci_low", "ci_high", "n"}}``."""
    from segloss.metrics.stats import bootstrap_ci

    records = []
    for (model, dataset, loss), by_seed in groups.items():
        names = list(dict.fromkeys(k for metrics in by_seed.values() for k in metrics))
        stats: dict[str, dict[str, float]] = {}
        for name in names:
            values = [m[name] for m in by_seed.values() if _finite(m.get(name))]
            if values:
                mean, low, high = bootstrap_ci(values, seed=seed)
                stats[name] = {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values)}
        records.append({"model": model, "dataset": dataset, "loss": loss, "seeds": sorted(by_seed), "metrics": stats})
    return records


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and math.isfinite(value)


def primary_metrics(records: list[dict[str, Any]]) -> dict[str, str]:
    """``{dataset: metric}``: the first of :data:`PRIMARY_METRICS` that the dataset's cells report."""
    out = {}
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        present = {m for r in records if r["dataset"] == dataset for m in r["metrics"]}
        out[dataset] = next((m for m in PRIMARY_METRICS if m in present), "exact_match")
    return out


def compare_to_baseline(
    groups: dict[Key, dict[int, dict[str, float]]], *, metrics: dict[str, str] | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Per non-CE (model, dataset, loss): mean metric vs CE, relative change, and the paired test over seeds.

    ``metrics`` maps a dataset to the metric compared (default ``exact_match``).
    """
    from segloss.metrics.stats import paired_permutation_test

    out = []
    for (model, dataset, loss), by_seed in groups.items():
        if loss == BASELINE:
            continue
        metric = (metrics or {}).get(dataset, "exact_match")
        base = groups.get((model, dataset, BASELINE), {})
        value = {s: m[metric] for s, m in by_seed.items() if _finite(m.get(metric))}
        ref = {s: m[metric] for s, m in base.items() if _finite(m.get(metric))}
        paired = sorted(set(value) & set(ref))
        record: dict[str, Any] = {
            "model": model,
            "dataset": dataset,
            "loss": loss,
            "metric": metric,
            "n_pairs": len(paired),
            "mean": _mean(value.values()),
            "baseline_mean": _mean(ref.values()),
            "difference": None,
            "relative_change": None,
            "p_value": None,
            "significant": None,
            "min_attainable_p": None,
        }
        if record["mean"] is not None and record["baseline_mean"] is not None:
            record["difference"] = record["mean"] - record["baseline_mean"]
        if record["difference"] is not None and record["baseline_mean"]:
            record["relative_change"] = (record["mean"] - record["baseline_mean"]) / record["baseline_mean"]
        if paired:
            a, b = [value[s] for s in paired], [ref[s] for s in paired]
            record["p_value"] = paired_permutation_test(a, b, seed=seed)
            record["significant"] = record["p_value"] < ALPHA
            record["min_attainable_p"] = min(1.0, 2.0 / 2 ** len(paired))
        out.append(record)
    return out


def _mean(values: Any) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def headline(comparisons: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The paper's headline: per model × dataset the best loss by mean EM (accuracy on QA) vs CE, and the mean
    relative gain over those pairs."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for c in comparisons:
        if c["relative_change"] is None:
            continue
        key = (c["model"], c["dataset"])
        if key not in best or c["mean"] > best[key]["mean"]:
            best[key] = c
    if not best:
        return None
    gains = [c["relative_change"] for c in best.values()]
    return {
        "mean_relative_gain": sum(gains) / len(gains),
        "pairs": len(gains),
        "best": [
            {
                "model": m,
                "dataset": d,
                **{k: c[k] for k in ("loss", "metric", "relative_change", "p_value", "significant", "n_pairs")},
            }
            for (m, d), c in best.items()
        ],
    }


# -- the study: each loss vs CE over seeds and problems ------------------------------------------------------------
CORRECTION = "holm"
SIDE_METRICS = ("iou", "well_formed", "missing_steps", "extra_steps")


def study(rows: list[dict[str, Any]], *, metrics: dict[str, str] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Per (model, dataset) with a CE baseline: every loss's mean metric with CIs, its change vs CE and a test.

    The unit is one (seed, problem) score, read from each cell's ``predictions.jsonl`` (the cell's mean when the file
    is absent: then each seed is one unit). For a loss with seeds S and the problems N that all its cells and CE's
    share, ``A`` and ``B`` are the ``[S, N]`` score matrices of the loss and of CE on the paired seeds:

    * ``em_mean`` and ``em_ci``: mean over every seed of the loss, CI from the crossed bootstrap (seeds and problems
      resampled; :func:`segloss.metrics.stats.crossed_bootstrap_ci`);
    * ``rel_change_vs_ce`` and ``rel_change_ci``: ``mean(A) / mean(B) - 1``, paired crossed bootstrap;
    * ``p_value_raw``: two-sided paired sign-flip permutation test on the ``S × N`` differences ``A - B``;
      ``p_value``: Holm-adjusted over the non-CE losses of the (model, dataset) (family-wise error ≤ :data:`ALPHA`).
    """
    by_cell: dict[Key, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: (r["cell_index"], r["config_hash"])):
        by_cell[(row["model"], row["dataset"], row["loss"])][int(row["seed"])] = row
    order = _orders(list(by_cell))
    out = []
    for model, dataset in dict.fromkeys(key[:2] for key in by_cell):
        baseline = by_cell.get((model, dataset, BASELINE))
        if not baseline:
            continue
        metric = (metrics or {}).get(dataset, "exact_match")
        losses = sorted((k[2] for k in by_cell if k[:2] == (model, dataset)), key=lambda loss: order[2][loss])
        entries = {loss: _study_entry(by_cell[(model, dataset, loss)], baseline, metric, seed) for loss in losses}
        tested = [loss for loss in losses if loss != BASELINE]
        adjusted = holm_adjust_entries([entries[loss]["p_value_raw"] for loss in tested])
        for loss, p in zip(tested, adjusted, strict=True):
            entries[loss]["p_value"] = p
            entries[loss]["significant"] = None if p is None else p < ALPHA
        for loss in losses:
            entries[loss]["verdict"] = verdict(loss, entries[loss], entries[BASELINE], metric)
        n_problems = entries[BASELINE]["n_problems"]
        out.append({"model": model, "dataset": dataset, "metric": metric, "n_problems": n_problems, "losses": entries})
    return out


def attach_tests(comparisons: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Give the seed-level comparisons (and so the headline) the study's tests: Holm-adjusted p over (seed,
    problem) pairs, so that the report states one p-value per loss."""
    tests = {(i["model"], i["dataset"], loss): e for i in items for loss, e in i["losses"].items()}
    for c in comparisons:
        e = tests.get((c["model"], c["dataset"], c["loss"]))
        if e is not None and e["p_value"] is not None:
            c.update(p_value=e["p_value"], p_value_raw=e["p_value_raw"], significant=e["significant"])
            c.update(n_pairs=e.get("n_pairs", c["n_pairs"]))


def holm_adjust_entries(p_values: list[float | None]) -> list[float | None]:
    from segloss.metrics.stats import holm_adjust

    return holm_adjust(p_values)


def _study_entry(
    cells: dict[int, dict[str, Any]], baseline: dict[int, dict[str, Any]], metric: str, seed: int
) -> dict[str, Any]:
    from segloss.metrics.stats import crossed_bootstrap_ci, paired_permutation_test

    scores = {s: _unit_scores(row, metric) for s, row in cells.items()}
    scores = {s: v for s, v in scores.items() if v}
    entry: dict[str, Any] = {
        "n_seeds": len(scores),
        "seeds": sorted(scores),
        "em_mean": None,
        "em_ci": None,
        "em_per_seed": {},
        "n_problems": 0,
        "rel_change_vs_ce": None,
        "rel_change_ci": None,
        "difference": None,
        "p_value_raw": None,
        "p_value": None,
        "significant": None,
        **_side_means(cells),
    }
    if not scores:
        return entry
    units = sorted(set.intersection(*(set(v) for v in scores.values())))
    matrix = [[scores[s][u] for u in units] for s in sorted(scores)]
    mean, low, high = crossed_bootstrap_ci(matrix, seed=seed)
    entry.update(em_mean=mean, em_ci=[low, high], n_problems=len(units))
    entry["em_per_seed"] = {s: sum(v.values()) / len(v) for s, v in sorted(scores.items())}
    ref = {s: _unit_scores(row, metric) for s, row in baseline.items()}
    paired = [s for s in sorted(scores) if ref.get(s)]
    shared = sorted(set.intersection(*(set(scores[s]) & set(ref[s]) for s in paired))) if paired else []
    if cells is baseline or not shared:
        return entry
    a = [[scores[s][u] for u in shared] for s in paired]  # [S, N]
    b = [[ref[s][u] for u in shared] for s in paired]  # [S, N]
    diff, _, _ = crossed_bootstrap_ci(a, b, statistic="difference", seed=seed, n_resamples=1)
    rel, rel_low, rel_high = crossed_bootstrap_ci(a, b, statistic="relative", seed=seed)
    entry.update(difference=diff, n_pairs=len(paired) * len(shared))
    if math.isfinite(rel):
        entry.update(rel_change_vs_ce=rel, rel_change_ci=[rel_low, rel_high])
    flat_a, flat_b = [x for r in a for x in r], [x for r in b for x in r]
    entry["p_value_raw"] = paired_permutation_test(flat_a, flat_b, seed=seed)
    return entry


def _unit_scores(row: dict[str, Any], metric: str) -> dict[str, float]:
    """``{problem id: score}`` from the cell's predictions, else ``{"cell": mean}`` (one unit per seed)."""
    path = Path(row["eval_dir"]) / "predictions.jsonl" if row.get("eval_dir") else None
    if path is not None and path.is_file():
        with path.open() as handle:
            preds = [_flat(json.loads(line)) for line in handle if line.strip()]
        scores = {str(p.get("id", i)): p.get(metric) for i, p in enumerate(preds)}
        found = {k: float(v) for k, v in scores.items() if _finite(v)}
        if found:
            return found
    value = (row.get("metrics") or {}).get(metric)
    return {"cell": float(value)} if _finite(value) else {}


def _side_means(cells: dict[int, dict[str, Any]]) -> dict[str, float | None]:
    """Means over seeds of the other metrics, and of the training cost (seconds; tokens from train_summary.json)."""
    out: dict[str, float | None] = {}
    for name in (*SIDE_METRICS, "train_seconds"):
        out[name] = _mean(r["metrics"][name] for r in cells.values() if _finite((r["metrics"] or {}).get(name)))
    out["train_tokens"] = _mean(t for r in cells.values() if (t := _train_tokens(r)) is not None)
    return out


def _train_tokens(row: dict[str, Any]) -> float | None:
    path = Path(row["run_dir"]) / "train_summary.json" if row.get("run_dir") else None
    if path is None or not path.is_file():
        return None
    tokens = json.loads(path.read_text()).get("tokens")
    return float(tokens) if _finite(tokens) else None


def verdict(loss: str, entry: dict[str, Any], ce: dict[str, Any], metric: str) -> str:
    """One plain sentence: is this loss better than, worse than, or not distinguishable from CE?"""
    name = LABELS.get(metric, metric)
    if entry["em_mean"] is None:
        return f"{loss}: no finished cell with {name} scores."
    if loss == BASELINE:
        return f"{loss}: the baseline, {100 * entry['em_mean']:.1f} % {name} over {entry['n_seeds']} seed(s)."
    if entry["p_value"] is None:
        return f"{loss}: not compared — no seed where both it and CE finished."
    if entry["rel_change_vs_ce"] is None:
        change = f"{100 * (entry['difference'] or 0.0):+.1f} points of {name} (CE scores 0, no relative change)"
    else:
        low, high = (100 * x for x in entry["rel_change_ci"])
        change = f"{100 * entry['rel_change_vs_ce']:+.1f} % relative {name} [95 % CI {low:+.1f}, {high:+.1f}]"
    p = f"Holm-adjusted p = {entry['p_value']:.3g}"
    if not entry["significant"]:
        return f"{loss}: no significant difference from CE ({change}, {p}); it may be noise."
    direction = "better" if (entry["difference"] or 0.0) > 0 else "worse"
    ci = entry["rel_change_ci"]
    if ci is not None and ci[0] <= 0 <= ci[1]:
        # The pooled (seed, problem) test ignores seed-to-seed variance; the crossed CI does not: it has the last word.
        caveat = "but its CI includes no change: not established"
        return f"{loss}: {direction} than CE on these problems ({change}, {p}), {caveat}."
    return f"{loss}: {direction} than CE ({change}, {p})."


def format_study_table(item: dict[str, Any]) -> str:
    """The Markdown table of one (model, dataset) study: one row per loss, CE first; the demo prints it."""
    metric = LABELS.get(item["metric"], item["metric"])
    header = [
        "Loss",
        f"{metric} % [95 % CI]",
        f"{metric} % per seed",
        "vs CE [95 % CI]",
        "p (Holm)",
        "IoU %",
        "Missing",
        "Extra",
        "Train s",
    ]
    rows = []
    for loss, e in item["losses"].items():
        em = (
            "–"
            if e["em_mean"] is None
            else f"{100 * e['em_mean']:.1f} [{100 * e['em_ci'][0]:.1f}, {100 * e['em_ci'][1]:.1f}]"
        )
        per_seed = ", ".join(f"{100 * v:.1f}" for v in e["em_per_seed"].values()) or "–"
        if loss == BASELINE:
            rel, p = "—", "—"
        elif e["rel_change_vs_ce"] is None:
            rel, p = "n/a", "–" if e["p_value"] is None else f"{e['p_value']:.3g}"
        else:
            low, high = (100 * x for x in e["rel_change_ci"])
            rel = f"{100 * e['rel_change_vs_ce']:+.1f} % [{low:+.1f}, {high:+.1f}]"
            p = f"{e['p_value']:.3g}"
        side = [_num(e["iou"], 100.0, 1), _num(e["missing_steps"], 1.0, 2), _num(e["extra_steps"], 1.0, 2)]
        rows.append([loss, em, per_seed, rel, p, *side, _num(e["train_seconds"], 1.0, 0)])
    return "\n".join(_md_table(header, rows))


def _num(value: float | None, scale: float, digits: int) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def study_summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The content of ``summary.json``: every study, and its ``losses`` at the top level when there is one."""
    payload: dict[str, Any] = {
        "alpha": ALPHA,
        "correction": CORRECTION,
        "test": "two-sided paired sign-flip permutation test over (seed, problem) pairs",
        "ci": "95 % percentile bootstrap, seeds and problems resampled (crossed)",
        "studies": items,
    }
    if len(items) == 1:
        payload.update({k: items[0][k] for k in ("model", "dataset", "metric", "n_problems", "losses")})
    return payload


# -- ROSCOE (optional) ---------------------------------------------------------------------------------------------
def roscoe_section(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """ROSCOE means per (model, dataset, loss) and correlations, when the cells' predictions carry ROSCOE scores."""
    per_cell: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        path = Path(row["eval_dir"] or "") / "predictions.jsonl" if row.get("eval_dir") else None
        if path is None or not path.is_file():
            continue
        with path.open() as handle:
            # evaluate() nests the per-example scores under "metrics"; flat rows are read as they are.
            preds = [_flat(json.loads(line)) for line in handle if line.strip()]
        if preds and any(k.startswith(ROSCOE_PREFIX) for k in preds[0]):
            per_cell[(row["model"], row["dataset"], row["loss"])].extend(preds)
    if not per_cell:
        return None
    means = {}
    for key, preds in per_cell.items():
        names = [k for k in preds[0] if k.startswith(ROSCOE_PREFIX)]
        means[key] = {n: _mean(p[n] for p in preds if _finite(p.get(n))) for n in names}
    try:
        from segloss.metrics.roscoe import correlations

        corr = correlations([p for preds in per_cell.values() for p in preds])
    except (ImportError, ValueError):  # module absent, or only scores it does not know: means only
        corr = None
    return {"means": means, "correlations": corr}


def _flat(prediction: dict[str, Any]) -> dict[str, Any]:
    nested = prediction.get("metrics")
    return {**prediction, **nested} if isinstance(nested, dict) else prediction


# -- rendering -----------------------------------------------------------------------------------------------------
def _fmt(stat: dict[str, float] | None, metric: str) -> str:
    if not stat:
        return "–"
    scale, digits = (100.0, 1) if metric in PERCENT_METRICS else (1.0, 3)
    mean, low, high = (stat[k] * scale for k in ("mean", "ci_low", "ci_high"))
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _fmt_p(c: dict[str, Any]) -> str:
    if c["p_value"] is None:
        return "no paired seeds"
    verdict = "significant" if c["significant"] else "not significant"
    return f"Holm-adjusted p = {c['p_value']:.3g}, {verdict} (n = {c['n_pairs']} pairs)"


def _fmt_rel(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f} %"


def _fmt_change(c: dict[str, Any]) -> str:
    """``+10.0 pts (+33.3 %)``: absolute change (points for % metrics) and relative change over CE."""
    if c["difference"] is None:
        return "n/a (no CE baseline)"
    absolute = f"{c['difference'] * 100:+.1f} pts" if c["metric"] in PERCENT_METRICS else f"{c['difference']:+.3f}"
    return f"{absolute} ({_fmt_rel(c['relative_change'])})"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _present(records: list[dict[str, Any]], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if any(n in r["metrics"] for r in records)]


def _metric_table(records: list[dict[str, Any]], datasets: list[str], metrics: tuple[str, ...]) -> list[str]:
    """Rows model × loss; per dataset one column per metric it reports (mean [CI]); then the number of seeds."""
    index = {(r["model"], r["dataset"], r["loss"]): r for r in records}
    columns = [
        (d, m) for d in datasets for m in metrics if any(r["dataset"] == d and m in r["metrics"] for r in records)
    ]
    header = ["Model", "Loss"] + [f"{d} {LABELS.get(m, m)}" for d, m in columns]
    header.append("Seeds")
    rows = []
    for model, loss in dict.fromkeys((r["model"], r["loss"]) for r in records):
        cells = [model, loss]
        for d, m in columns:
            rec = index.get((model, d, loss))
            cells.append(_fmt(rec["metrics"].get(m) if rec else None, m))
        counts = [str(len(index[(model, d, loss)]["seeds"])) for d in datasets if (model, d, loss) in index]
        cells.append("/".join(dict.fromkeys(counts)))  # "3", or "3/2" when datasets differ
        rows.append(cells)
    return _md_table(header, rows)


def render_markdown(
    store_path: Path,
    counts: dict[str, int],
    failed: list[dict[str, Any]],
    records: list[dict],
    comparisons: list[dict],
    head: dict | None,
    roscoe: dict | None,
    plots: dict[str, str],
    items: list[dict[str, Any]] | None = None,
    points: dict | None = None,
) -> str:
    items, points = items or [], points or {}
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    steps = _present(records, STEP_ERRORS)
    lines = [
        f"# Grid report: `{store_path}`",
        "",
        f"Cells: {counts['done']} done, {counts['failed']} failed, {counts['running']} running, "
        f"{counts['pending']} pending. Only done cells enter the tables.",
        "",
    ]
    lines += [
        "## Results",
        "",
        "Mean over seeds with its 95 % percentile-bootstrap CI over seeds in brackets "
        "(few seeds make these intervals rough). EM, IoU and accuracies in %; step errors are means per "
        "example (lower is better). Acc (LL) / Acc norm (LL) are log-likelihood choice scores.",
        "",
    ]
    lines += [*_metric_table(records, datasets, MAIN_METRICS), ""]
    lines += _headline_lines(comparisons, head)
    lines += _study_lines(items)
    lines += _sweep_lines(items, points)
    if steps:
        lines += ["## Step-error breakdown", "", *_metric_table(records, datasets, STEP_ERRORS), ""]
    lines += ["## Plots", ""] + [f"![{title}]({name})" for name, title in plots.items()] + [""]
    if not steps:
        lines += ["No step-error metrics in the store (e.g. multiple-choice datasets): no step-error plot.", ""]
    if roscoe:
        lines += _roscoe_lines(roscoe)
    if failed:
        lines += (
            ["## Failed cells", ""]
            + [
                f"- {r['model']} / {r['dataset']} / {r['loss']} / seed {r['seed']}: "
                f"{(r['error'] or '').strip().splitlines()[-1] if r['error'] else 'no error text'}"
                for r in failed
            ]
            + [""]
        )
    lines += ["Files: `table.csv` and `table.json` (every metric, with CIs and the comparisons).", ""]
    return "\n".join(lines)


def _headline_lines(comparisons: list[dict[str, Any]], head: dict[str, Any] | None) -> list[str]:
    lines = ["## Headline: best loss vs CE", ""]
    if head is None:
        return [*lines, "No loss could be compared with CE (no CE baseline with a non-zero EM).", ""]
    lines.append(
        f"Mean relative EM gain (accuracy on multiple-choice sets) of the best loss over CE: "
        f"**{_fmt_rel(head['mean_relative_gain'])}** "
        f"over {head['pairs']} model × dataset pair(s). The best loss is picked after seeing the results, "
        "which flatters it; read it together with the tests below."
    )
    lines += (
        [""]
        + [
            f"- {b['model']} / {b['dataset']}: best loss `{b['loss']}`, {_fmt_rel(b['relative_change'])} "
            f"{LABELS.get(b['metric'], b['metric'])} vs CE, {_fmt_p(b)}"
            for b in head["best"]
        ]
        + [""]
    )
    return lines


def _study_lines(items: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Each loss vs CE",
        "",
        "Per model and dataset: mean EM (accuracy on multiple-choice sets) over seeds with its 95 % CI, the change "
        "relative to CE with its CI (both from a bootstrap that resamples seeds and problems), and a two-sided paired "
        "sign-flip permutation test over (seed, problem) pairs, Holm-adjusted over the losses compared with CE "
        f"(significant: adjusted p < {ALPHA}). Without per-problem predictions each seed is one unit.",
        "",
    ]
    for item in items:
        units = f"{item['n_problems']} problems" if item["n_problems"] > 1 else "per-seed means, no predictions"
        lines += [f"### {item['model']} / {item['dataset']} ({units})", ""]
        lines += [format_study_table(item), ""]
        lines += [f"- {e['verdict']}" for e in item["losses"].values()] + [""]
    if not items:
        lines += ["No CE baseline among the done cells: nothing to compare with.", ""]
    per_seed = [e for i in items if i["n_problems"] <= 1 for e in i["losses"].values() if e["p_value"] is not None]
    if per_seed and 2.0 / 2 ** max(e["n_seeds"] for e in per_seed) >= ALPHA:
        n = max(e["n_seeds"] for e in per_seed)
        lines += [
            f"With {n} seed(s) as the only units the smallest attainable p-value is {2.0 / 2**n:.3f} ≥ {ALPHA}: "
            "no difference can be significant; keep the per-problem predictions or run at least 6 seeds.",
            "",
        ]
    return lines


def _sweep_lines(items: list[dict[str, Any]], points: dict) -> list[str]:
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
        metric = LABELS.get(item["metric"], item["metric"])
        lines += [f"## {metric} against the CE weight: {item['model']} / {item['dataset']}", ""]
        lines += [f"Mean {metric} (%) over seeds; λ = 1 is CE alone, λ = 0 the task loss alone.", ""]
        lines += [*_md_table(["Task loss", *(f"λ = {lam:g}" for lam in lams)], rows), ""]
    return lines


def _roscoe_lines(roscoe: dict[str, Any]) -> list[str]:
    names = list(dict.fromkeys(n for m in roscoe["means"].values() for n in m))
    rows = [
        [m, d, loss] + [f"{v[n]:.3f}" if v.get(n) is not None else "–" for n in names]
        for (m, d, loss), v in roscoe["means"].items()
    ]
    lines = ["## ROSCOE", "", "Mean ROSCOE scores per cell group (all seeds' predictions pooled).", ""]
    lines += [*_md_table(["Model", "Dataset", "Loss", *names], rows), ""]
    if roscoe["correlations"]:
        targets = list(dict.fromkeys(t for v in roscoe["correlations"].values() for t in v))
        rows = [[s] + [f"{v.get(t, math.nan):.3f}" for t in targets] for s, v in roscoe["correlations"].items()]
        lines += ["Pearson correlation of each ROSCOE score with the per-example metrics:", ""]
        lines += [*_md_table(["Score", *targets], rows), ""]
    return lines


# -- plots ---------------------------------------------------------------------------------------------------------
def _figure(n_panels: int):
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 4.5 * n_panels), 4.0), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _save_png(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(path, buffer.getvalue())


def plot_em_per_loss(records: list[dict[str, Any]], path: Path) -> bool:
    """Bars of mean EM (%) per loss (accuracy on QA sets), one bar per model, one panel per dataset, 95 % CIs."""
    primary = primary_metrics(records)
    records = [r for r in records if primary[r["dataset"]] in r["metrics"]]
    if not records:
        return False
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    fig, axes = _figure(len(datasets))
    width = 0.8 / len(models)
    for ax, dataset in zip(axes, datasets, strict=True):
        losses = list(dict.fromkeys(r["loss"] for r in records if r["dataset"] == dataset))
        for j, model in enumerate(models):
            stats = {
                r["loss"]: r["metrics"][primary[dataset]]
                for r in records
                if r["dataset"] == dataset and r["model"] == model
            }
            xs = [i + (j - (len(models) - 1) / 2) * width for i, loss in enumerate(losses) if loss in stats]
            st = [stats[loss] for loss in losses if loss in stats]
            means = [100 * s["mean"] for s in st]
            errs = [[100 * (s["mean"] - s["ci_low"]) for s in st], [100 * (s["ci_high"] - s["mean"]) for s in st]]
            ax.bar(xs, means, width, yerr=errs, capsize=3, label=model)
        ax.set_xticks(range(len(losses)), losses, rotation=20, ha="right")
        ax.set_title(dataset)
        ax.set_ylabel(f"{LABELS.get(primary[dataset], primary[dataset])} (%)")
    axes[0].legend(fontsize="small")
    _save_png(fig, path)
    return True


def plot_step_errors(records: list[dict[str, Any]], path: Path) -> bool:
    """Grouped bars of each step error (mean per example, averaged over models) per loss; one panel per dataset."""
    names = _present(records, STEP_ERRORS)
    if not names:
        return False
    datasets = list(dict.fromkeys(r["dataset"] for r in records if any(n in r["metrics"] for n in names)))
    fig, axes = _figure(len(datasets))
    width = 0.8 / len(names)
    for ax, dataset in zip(axes, datasets, strict=True):
        losses = list(dict.fromkeys(r["loss"] for r in records if r["dataset"] == dataset))
        for j, name in enumerate(names):
            heights = [
                _mean(
                    r["metrics"][name]["mean"]
                    for r in records
                    if r["dataset"] == dataset and r["loss"] == loss and name in r["metrics"]
                )
                or 0.0
                for loss in losses
            ]
            ax.bar(
                [i + (j - (len(names) - 1) / 2) * width for i in range(len(losses))],
                heights,
                width,
                label=LABELS.get(name, name),
            )
        ax.set_xticks(range(len(losses)), losses, rotation=20, ha="right")
        ax.set_title(dataset)
        ax.set_ylabel("errors per example (mean over models)")
    axes[0].legend(fontsize="small")
    _save_png(fig, path)
    return True


def plot_em_per_seed(items: list[dict[str, Any]], path: Path) -> bool:
    """EM (%) of every seed per loss (dots, the same seed joined across losses) and the mean with its 95 % CI."""
    items = [i for i in items if any(e["em_per_seed"] for e in i["losses"].values())]
    if not items:
        return False
    fig, axes = _figure(len(items))
    for ax, item in zip(axes, items, strict=True):
        losses = [loss for loss, e in item["losses"].items() if e["em_mean"] is not None]
        seeds = sorted({s for loss in losses for s in item["losses"][loss]["em_per_seed"]})
        for s in seeds:
            xs = [i for i, loss in enumerate(losses) if s in item["losses"][loss]["em_per_seed"]]
            ys = [100 * item["losses"][losses[i]]["em_per_seed"][s] for i in xs]
            ax.plot(xs, ys, "o-", color="0.6", alpha=0.5, markersize=4, linewidth=0.8)
        means, errs = _means_and_errors([item["losses"][loss] for loss in losses])
        ax.errorbar(range(len(losses)), means, yerr=errs, fmt="D", color="C3", capsize=4, label="mean [95 % CI]")
        ax.set_xticks(range(len(losses)), losses, rotation=20, ha="right")
        ax.set_title(f"{item['model'][-30:]} / {item['dataset']}", fontsize="small")
        ax.set_ylabel(f"{LABELS.get(item['metric'], item['metric'])} (%) per seed")
    axes[0].legend(fontsize="small")
    _save_png(fig, path)
    return True


def _means_and_errors(entries: list[dict[str, Any]]) -> tuple[list[float], list[list[float]]]:
    """Means (%) and the asymmetric error bars (%) of study entries, as ``errorbar`` takes them."""
    means = [100 * e["em_mean"] for e in entries]
    low = [m - 100 * e["em_ci"][0] for m, e in zip(means, entries, strict=True)]
    high = [100 * e["em_ci"][1] - m for m, e in zip(means, entries, strict=True)]
    return means, [low, high]


def sweep_points(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[float, str]]]:
    """``{(model, dataset): {task loss: {ce_weight: loss label}}}`` for every cell whose loss is CE alone or CE plus
    one task loss (``lovasz`` at the cell's ce_weight, ``ce=0.8,lovasz=0.2``, ``lovasz=1``). CE alone (λ = 1) is
    the shared end point of every task loss's curve. Mixes of several task losses are left out."""
    from segloss.losses import LossSpec

    found: dict[tuple[str, str], dict[str, dict[float, str]]] = defaultdict(lambda: defaultdict(dict))
    ce_only: dict[tuple[str, str], str] = {}
    for row in rows:
        ce_weight = (row.get("settings") or {}).get("train", {}).get("ce_weight", 0.6)
        try:
            spec = LossSpec.parse(row["loss"], ce_weight=ce_weight)
        except ValueError:
            continue
        weights, tasks = spec.weights, spec.task_losses
        key = (row["model"], row["dataset"])
        if not tasks:
            ce_only[key] = row["loss"]
        elif len(tasks) == 1:
            total = sum(weights.values())
            found[key][tasks[0]][round(weights.get("ce", 0.0) / total, 6)] = row["loss"]
    for key, label in ce_only.items():
        for curve in found.get(key, {}).values():
            curve.setdefault(1.0, label)
    return {k: {t: dict(sorted(c.items())) for t, c in v.items()} for k, v in found.items()}


def plot_lambda_sweep(items: list[dict[str, Any]], points: dict, path: Path) -> bool:
    """EM (%) against the CE weight λ, one line per task loss (mean over seeds, 95 % CI), one panel per study;
    drawn only where some task loss has at least three λ values."""
    panels = [(i, points[(i["model"], i["dataset"])]) for i in items if (i["model"], i["dataset"]) in points]
    panels = [(i, curves) for i, curves in panels if any(len(c) >= 3 for c in curves.values())]
    if not panels:
        return False
    fig, axes = _figure(len(panels))
    for ax, (item, curves) in zip(axes, panels, strict=True):
        for j, (task, curve) in enumerate(curves.items()):
            got = [(lam, item["losses"][label]) for lam, label in curve.items() if label in item["losses"]]
            got = [(lam, e) for lam, e in got if e["em_mean"] is not None]
            xs = [lam + (j - (len(curves) - 1) / 2) * 0.01 for lam, _ in got]  # small dodge: CIs stay readable
            ys, errs = _means_and_errors([e for _, e in got])
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=task)
        ax.set_xlabel("ce_weight λ (L = λ·CE + (1 − λ)·task)")
        ax.set_ylabel(f"{LABELS.get(item['metric'], item['metric'])} (%)")
        ax.set_title(f"{item['model'][-30:]} / {item['dataset']}", fontsize="small")
        ax.invert_xaxis()  # from CE alone (λ = 1) on the left to the task loss alone (λ = 0)
    axes[0].legend(fontsize="small")
    _save_png(fig, path)
    return True


# -- files ---------------------------------------------------------------------------------------------------------
def table_csv(records: list[dict[str, Any]]) -> str:
    """One line per (model, dataset, loss); per metric ``<m>_mean, <m>_ci_low, <m>_ci_high, <m>_n``."""
    names = list(dict.fromkeys(n for r in records for n in r["metrics"]))
    header = ["model", "dataset", "loss", "n_seeds"] + [
        f"{n}_{s}" for n in names for s in ("mean", "ci_low", "ci_high", "n")
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        stats = [r["metrics"].get(n, {}).get(s, "") for n in names for s in ("mean", "ci_low", "ci_high", "n")]
        writer.writerow([r["model"], r["dataset"], r["loss"], len(r["seeds"]), *stats])
    return buffer.getvalue()


def write_report(
    store_path: str | Path, out_dir: str | Path, *, seed: int = 0, cells: Collection[str] | None = None
) -> Path:
    """Write ``report.md``, ``summary.json``, ``table.csv``, ``table.json`` and the PNG plots into ``out_dir`` from
    the store's done cells; returns the path of ``report.md``. ``cells`` (config hashes) keeps only those cells: the
    demo reports exactly its own grid even when a λ sweep or more seeds share its store."""
    store_path, out = Path(store_path), Path(out_dir)
    with ResultStore.open_readonly(store_path) as store:  # never writes: refuses what is not a segloss store
        rows, failed, counts = store.rows("done"), store.rows("failed"), store.counts()
    if cells is not None:
        keep = set(cells)
        rows, failed = [r for r in rows if r["config_hash"] in keep], [r for r in failed if r["config_hash"] in keep]
    if not rows:
        raise ValueError(f"store {store_path} has no done cells ({counts}); run `segloss grid` first")
    groups = group_rows(rows)
    records = aggregate(groups, seed=seed)
    comparisons = compare_to_baseline(groups, metrics=primary_metrics(records), seed=seed)
    head = headline(comparisons)
    items = study(rows, metrics=primary_metrics(records), seed=seed)
    attach_tests(comparisons, items)
    points = sweep_points(rows)
    roscoe = roscoe_section(rows)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    if plot_em_per_loss(records, out / "em_per_loss.png"):
        written["em_per_loss.png"] = "EM per loss (95 % CI over seeds)"
    if plot_em_per_seed(items, out / "em_per_seed.png"):
        written["em_per_seed.png"] = "EM per seed and loss (grey: one seed; red: mean and 95 % CI)"
    if plot_step_errors(records, out / "step_errors.png"):
        written["step_errors.png"] = "Step-error breakdown per loss"
    if plot_lambda_sweep(items, points, out / "lambda_sweep.png"):
        written["lambda_sweep.png"] = "EM against the CE weight per task loss (95 % CI)"
    atomic_write(out / "summary.json", json.dumps(study_summary(items), indent=2, default=_json_default) + "\n")
    payload = {
        "store": str(store_path),
        "counts": counts,
        "table": records,
        "comparisons": comparisons,
        "headline": head,
        "alpha": ALPHA,
    }
    atomic_write(out / "table.json", json.dumps(payload, indent=2, default=_json_default) + "\n")
    atomic_write(out / "table.csv", table_csv(records))
    report = out / "report.md"
    text = render_markdown(store_path, counts, failed, records, comparisons, head, roscoe, written, items, points)
    atomic_write(report, text)
    return report


def _json_default(value: Any) -> Any:
    return str(value)
