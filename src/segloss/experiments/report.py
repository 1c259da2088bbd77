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
from pathlib import Path
from typing import Any

from segloss.experiments.store import ResultStore
from segloss.fileio import atomic_write

BASELINE = "ce"
ALPHA = 0.05
MAIN_METRICS = ("exact_match", "accuracy", "acc", "acc_norm", "iou", "missing_steps", "extra_steps")
# The metric a dataset is compared on: EM for math sets, generated-letter accuracy for multiple-choice sets.
PRIMARY_METRICS = ("exact_match", "accuracy", "acc_norm", "acc")
STEP_ERRORS = (
    "missing_steps",
    "extra_steps",
    "repetitions",
    "wrong_operators",
    "inverted_operands",
    "calculation_errors",
)
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


def _finite(value: Any) -> bool:
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
    return f"p = {c['p_value']:.3f}, {verdict} (n = {c['n_pairs']})"


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
) -> str:
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
    lines += _comparison_lines(comparisons, datasets)
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


def _comparison_lines(comparisons: list[dict[str, Any]], datasets: list[str]) -> list[str]:
    lines = [
        "## Each loss vs CE",
        "",
        "Relative change of the mean metric (EM; accuracy on multiple-choice sets) over CE, and a two-sided "
        "paired permutation test (sign flips of the per-seed differences, paired by seed). Significant means "
        f"p < {ALPHA}.",
        "",
    ]
    index = {(c["model"], c["dataset"], c["loss"]): c for c in comparisons}
    metric = {c["dataset"]: LABELS.get(c["metric"], c["metric"]) for c in comparisons}
    header = ["Model", "Loss"] + [f"{d} {metric.get(d, '')} change" for d in datasets]
    header += [f"{d} test" for d in datasets]
    rows = []
    for model, loss in dict.fromkeys((c["model"], c["loss"]) for c in comparisons):
        got = [index.get((model, d, loss)) for d in datasets]
        rows.append(
            [model, loss] + [_fmt_change(c) if c else "–" for c in got] + [_fmt_p(c) if c else "–" for c in got]
        )
    lines += [*_md_table(header, rows), ""]
    tested = [c for c in comparisons if c["p_value"] is not None]
    significant = [c for c in tested if c["significant"]]
    if tested and not significant:
        lines.append(
            f"**No loss differs significantly from CE** (all p ≥ {ALPHA}): the differences above are not "
            "significant and may be seed noise."
        )
    elif tested:
        lines.append(
            f"{len(significant)} of {len(tested)} comparisons are significant at p < {ALPHA}; the others "
            "are not significant. With several comparisons some small p-values are expected by chance "
            "(no multiple-testing correction is applied)."
        )
    smallest = min((c["min_attainable_p"] for c in tested), default=None)
    if smallest is not None and smallest >= ALPHA:
        n = max(c["n_pairs"] for c in tested)
        lines.append(
            f"With {n} paired seed(s) the smallest attainable p-value is {smallest:.3f} ≥ {ALPHA}, so this "
            "test cannot reach significance whatever the differences; at least 6 seeds are needed."
        )
    return [*lines, ""]


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


def write_report(store_path: str | Path, out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write ``report.md``, ``table.csv``, ``table.json``, ``em_per_loss.png`` and ``step_errors.png`` into
    ``out_dir`` from the store's done cells; returns the path of ``report.md``."""
    store_path, out = Path(store_path), Path(out_dir)
    with ResultStore.open_readonly(store_path) as store:  # never writes: refuses what is not a segloss store
        rows, failed, counts = store.rows("done"), store.rows("failed"), store.counts()
    if not rows:
        raise ValueError(f"store {store_path} has no done cells ({counts}); run `segloss grid` first")
    groups = group_rows(rows)
    records = aggregate(groups, seed=seed)
    comparisons = compare_to_baseline(groups, metrics=primary_metrics(records), seed=seed)
    head = headline(comparisons)
    roscoe = roscoe_section(rows)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    if plot_em_per_loss(records, out / "em_per_loss.png"):
        written["em_per_loss.png"] = "EM per loss (95 % CI over seeds)"
    if plot_step_errors(records, out / "step_errors.png"):
        written["step_errors.png"] = "Step-error breakdown per loss"
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
    atomic_write(report, render_markdown(store_path, counts, failed, records, comparisons, head, roscoe, written))
    return report


def _json_default(value: Any) -> Any:
    return str(value)
