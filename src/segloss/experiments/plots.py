"""The report's figures (matplotlib, written as PNG files; never a window). Each returns False, writing nothing,
when there is nothing to draw.

* ``differences.png`` — each comparison's difference in points with its 95 % CI, the equivalence margin and 0;
* ``em_per_loss.png`` — mean EM (accuracy on QA) per arm, one bar per model, one panel per dataset, CIs over seeds;
* ``em_per_seed.png`` — EM of every seed per arm (the same seed joined across arms) and the mean with its CI;
* ``step_errors.png`` — the step-error breakdown per arm;
* ``lambda_sweep.png`` — EM against the CE weight λ per task loss, where a task loss has at least three λ values.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segloss.experiments.analysis import PRIMARY_METRICS
from segloss.experiments.rendering import label
from segloss.fileio import atomic_write
from segloss.metrics.formulas import STEP_ERRORS


def _figure(n_panels: int, *, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 4.5 * n_panels), height), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _save_png(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(path, buffer.getvalue())


def _primary(records: Sequence[dict[str, Any]], dataset: str) -> str:
    present = {m for r in records if r["dataset"] == dataset for m in r["metrics"]}
    return next((m for m in PRIMARY_METRICS if m in present), "exact_match")


def plot_differences(items: Sequence[dict[str, Any]], path: Path) -> bool:
    """Forest plot: one row per comparison, its difference (points) with the 95 % CI of the seed-level test, the
    ±margin band and the zero line; one panel per study."""
    items = [i for i in items if any(r["diff_points"] is not None for r in i["comparisons"])]
    if not items:
        return False
    n_rows = max(len(i["comparisons"]) for i in items)
    fig, axes = _figure(len(items), height=1.2 + 0.45 * n_rows)
    for ax, item in zip(axes, items, strict=True):
        records = [r for r in item["comparisons"] if r["diff_points"] is not None]
        ys = list(range(len(records)))[::-1]
        margin = max(r["equivalence"]["margin_points"] for r in records)
        ax.axvspan(-margin, margin, color="0.92", label=f"±{margin:g} (equivalence margin)")
        ax.axvline(0, color="0.4", linewidth=0.8)
        for y, r in zip(ys, records, strict=True):
            ci = r["diff_ci_points"] or [r["diff_points"], r["diff_points"]]
            color = "C3" if r["significant"] else "C0"
            ax.errorbar(
                r["diff_points"],
                y,
                xerr=[[r["diff_points"] - ci[0]], [ci[1] - r["diff_points"]]],
                fmt="o",
                color=color,
                capsize=4,
            )
        ax.set_yticks(ys, [f"{r['name']} ({label(r['metric'])})" for r in records], fontsize="small")
        ax.set_xlabel("difference (points), 95 % CI over seeds")
        ax.set_title(f"{item['model'][-30:]} / {item['dataset']}", fontsize="small")
        ax.legend(fontsize="x-small", loc="lower right")
    _save_png(fig, path)
    return True


def plot_em_per_loss(records: Sequence[dict[str, Any]], path: Path) -> bool:
    """Bars of mean EM (%) per arm (accuracy on QA sets), one bar per model, one panel per dataset, 95 % CIs."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    primary = {d: _primary(records, d) for d in datasets}
    records = [r for r in records if primary[r["dataset"]] in r["metrics"]]
    if not records:
        return False
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    fig, axes = _figure(len(datasets))
    width = 0.8 / len(models)
    for ax, dataset in zip(axes, datasets, strict=True):
        arms = list(dict.fromkeys(r["loss"] for r in records if r["dataset"] == dataset))
        for j, model in enumerate(models):
            stats = {
                r["loss"]: r["metrics"][primary[dataset]]
                for r in records
                if r["dataset"] == dataset and r["model"] == model
            }
            xs = [i + (j - (len(models) - 1) / 2) * width for i, arm in enumerate(arms) if arm in stats]
            st = [stats[arm] for arm in arms if arm in stats]
            means = [100 * s["mean"] for s in st]
            errs = [[100 * (s["mean"] - s["ci_low"]) for s in st], [100 * (s["ci_high"] - s["mean"]) for s in st]]
            ax.bar(xs, means, width, yerr=errs, capsize=3, label=model[-30:])
        ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
        ax.set_title(dataset)
        ax.set_ylabel(f"{label(primary[dataset])} (%)")
    axes[0].legend(fontsize="small")
    _save_png(fig, path)
    return True


def plot_step_errors(records: Sequence[dict[str, Any]], path: Path) -> bool:
    """Grouped bars of each step error (mean per example, averaged over models) per arm; one panel per dataset."""
    names = [n for n in STEP_ERRORS if any(n in r["metrics"] for r in records)]
    if not names:
        return False
    datasets = list(dict.fromkeys(r["dataset"] for r in records if any(n in r["metrics"] for n in names)))
    fig, axes = _figure(len(datasets))
    width = 0.8 / len(names)
    for ax, dataset in zip(axes, datasets, strict=True):
        arms = list(dict.fromkeys(r["loss"] for r in records if r["dataset"] == dataset))
        for j, name in enumerate(names):
            heights = []
            for arm in arms:
                values = [
                    r["metrics"][name]["mean"]
                    for r in records
                    if r["dataset"] == dataset and r["loss"] == arm and name in r["metrics"]
                ]
                heights.append(sum(values) / len(values) if values else 0.0)
            xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(arms))]
            ax.bar(xs, heights, width, label=label(name))
        ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
        ax.set_title(dataset)
        ax.set_ylabel("errors per example (mean over models)")
    axes[0].legend(fontsize="small")
    _save_png(fig, path)
    return True


def _means_and_errors(entries: Sequence[dict[str, Any]]) -> tuple[list[float], list[list[float]]]:
    """Means (%) and the asymmetric error bars (%) of arm entries, as ``errorbar`` takes them."""
    means = [100 * e["em_mean"] for e in entries]
    low = [m - 100 * e["em_ci"][0] for m, e in zip(means, entries, strict=True)]
    high = [100 * e["em_ci"][1] - m for m, e in zip(means, entries, strict=True)]
    return means, [low, high]


def plot_em_per_seed(items: Sequence[dict[str, Any]], path: Path) -> bool:
    """EM (%) of every seed per arm (dots, the same seed joined across arms) and the mean with its 95 % CI."""
    items = [i for i in items if any(e["em_per_seed"] for e in i["losses"].values())]
    if not items:
        return False
    fig, axes = _figure(len(items))
    for ax, item in zip(axes, items, strict=True):
        arms = [arm for arm, e in item["losses"].items() if e["em_mean"] is not None]
        seeds = sorted({s for arm in arms for s in item["losses"][arm]["em_per_seed"]})
        for s in seeds:
            xs = [i for i, arm in enumerate(arms) if s in item["losses"][arm]["em_per_seed"]]
            ys = [100 * item["losses"][arms[i]]["em_per_seed"][s] for i in xs]
            ax.plot(xs, ys, "o-", color="0.6", alpha=0.5, markersize=4, linewidth=0.8)
        means, errs = _means_and_errors([item["losses"][arm] for arm in arms])
        ax.errorbar(range(len(arms)), means, yerr=errs, fmt="D", color="C3", capsize=4, label="mean [95 % CI]")
        ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
        ax.set_title(f"{item['model'][-30:]} / {item['dataset']}", fontsize="small")
        ax.set_ylabel(f"{label(item['metric'])} (%) per seed")
    axes[0].legend(fontsize="small")
    _save_png(fig, path)
    return True


def plot_lambda_sweep(items: Sequence[dict[str, Any]], points: dict, path: Path) -> bool:
    """EM (%) against the CE weight λ, one line per task loss (mean over seeds, 95 % CI), one panel per study;
    drawn only where some task loss has at least three λ values."""
    panels = [(i, points[(i["model"], i["dataset"])]) for i in items if (i["model"], i["dataset"]) in points]
    panels = [(i, curves) for i, curves in panels if any(len(c) >= 3 for c in curves.values())]
    if not panels:
        return False
    fig, axes = _figure(len(panels))
    for ax, (item, curves) in zip(axes, panels, strict=True):
        for j, (task, curve) in enumerate(curves.items()):
            got = [(lam, item["losses"][arm]) for lam, arm in curve.items() if arm in item["losses"]]
            got = [(lam, e) for lam, e in got if e["em_mean"] is not None]
            xs = [lam + (j - (len(curves) - 1) / 2) * 0.01 for lam, _ in got]  # small dodge: CIs stay readable
            ys, errs = _means_and_errors([e for _, e in got])
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=task)
        ax.set_xlabel("ce_weight λ (L = λ·CE + (1 − λ)·task)")
        ax.set_ylabel(f"{label(item['metric'])} (%)")
        ax.set_title(f"{item['model'][-30:]} / {item['dataset']}", fontsize="small")
        ax.invert_xaxis()  # from CE alone (λ = 1) on the left to the task loss alone (λ = 0)
    axes[0].legend(fontsize="small")
    _save_png(fig, path)
    return True
