"""The report of a study: ``report.md``, ``summary.json``, ``table.csv``, ``table.json`` and PNG figures.

    segloss report --results results/smollm2-arith --plan configs/study/smollm2-arith.yaml --output-dir D
    segloss report --store runs/grid/results.sqlite --output-dir runs/grid/report

The cells come from a results folder (``results/<study>/<cell>/``, :mod:`segloss.experiments.results`) or from the
done cells of a grid's result store; both give the same :class:`~segloss.experiments.results.CellResult` values and
the same report. This module only wires the parts together:

* :mod:`segloss.experiments.analysis` — the statistics (arm levels, the seed-level test, TOST, the cluster-robust
  model, Holm, MDE, verdicts), following ``docs/study-plan.md``;
* :mod:`segloss.experiments.rendering` — verdict sentences, Markdown tables, CSV and ``summary.json``;
* :mod:`segloss.experiments.plots` — the figures.

Doc blocks: a Markdown page (``docs/results.md``) may hold tables generated from committed results between
``<!-- segloss-report results=results/<study> [plan=FILE] table=losses|comparisons|verdicts -->`` and
``<!-- /segloss-report -->``. :func:`fill_doc_blocks` regenerates them; a test checks that the page prints what the
committed results give, and ``segloss report --update-docs docs/results.md`` rewrites them.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from segloss.experiments import analysis, plots, rendering
from segloss.experiments.analysis import StudyPlan, load_plan
from segloss.experiments.rendering import format_comparisons_table, format_study_table
from segloss.experiments.results import ATTENTION, CellResult, finite, load_results, store_results
from segloss.fileio import atomic_write

__all__ = [
    "StudyPlan",
    "fill_doc_blocks",
    "format_comparisons_table",
    "format_study_table",
    "load_plan",
    "roscoe_section",
    "study",
    "sweep_points",
    "write_report",
    "write_results_report",
]
ROSCOE_PREFIX = "roscoe_"
PLAN_FILE = "plan.yaml"  # a results folder's own plan, used when no --plan is given


def _results(cells: Sequence[CellResult | dict[str, Any]]) -> list[CellResult]:
    """Store rows (dicts, as ``ResultStore.rows`` gives them) become :class:`CellResult`; results pass through."""
    rows = [c for c in cells if isinstance(c, dict)]
    if not rows:
        return [c for c in cells if isinstance(c, CellResult)]
    converted = iter(store_results(rows))
    return [next(converted) if isinstance(c, dict) else c for c in cells]


def study(
    cells: Sequence[CellResult | dict[str, Any]],
    *,
    metrics: dict[str, str] | None = None,
    plan: StudyPlan | None = None,
) -> list[dict[str, Any]]:
    """Every (model, dataset) study of ``cells`` (results, or a store's done rows): arms, comparisons, tests and
    verdict sentences (:func:`segloss.experiments.analysis.study`, then :func:`rendering.describe`)."""
    items = analysis.study(_results(cells), plan, metrics=metrics)
    rendering.describe(items)
    return items


def sweep_points(cells: Sequence[CellResult | dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[float, str]]]:
    """``{(model, dataset): {task loss: {ce_weight: arm}}}`` for every cell (attention targets) whose loss is CE
    alone or CE plus one task loss (``lovasz`` at the cell's ce_weight, ``ce=0.8,lovasz=0.2``, ``lovasz=1``). CE
    alone (λ = 1) is the shared end point of every task loss's curve. Mixes of several task losses are left out."""
    found: dict[tuple[str, str], dict[str, dict[float, str]]] = defaultdict(lambda: defaultdict(dict))
    ce_only: dict[tuple[str, str], str] = {}
    for r in _results(cells):
        if r.lora_targets != ATTENTION:
            continue
        weights, tasks = r.loss_spec.weights, r.loss_spec.task_losses
        key = (r.model, r.dataset)
        if not tasks:
            ce_only[key] = r.arm
        elif len(tasks) == 1:
            total = sum(weights.values())
            found[key][tasks[0]][round(weights.get("ce", 0.0) / total, 6)] = r.arm
    for key, arm in ce_only.items():
        for curve in found.get(key, {}).values():
            curve.setdefault(1.0, arm)
    return {k: {t: dict(sorted(c.items())) for t, c in v.items()} for k, v in found.items()}


def roscoe_section(cells: Sequence[CellResult]) -> dict[str, Any] | None:
    """ROSCOE means per (model, dataset, arm) and their correlations with the per-problem metrics, when the cells'
    predictions carry ROSCOE scores."""
    per_arm: dict[tuple[str, str, str], list[dict[str, float]]] = defaultdict(list)
    for r in cells:
        rows = list(r.scores.values())
        if rows and any(k.startswith(ROSCOE_PREFIX) for k in rows[0]):
            per_arm[(r.model, r.dataset, r.arm)].extend(rows)
    if not per_arm:
        return None
    means = {}
    for key, rows in per_arm.items():
        names = [k for k in rows[0] if k.startswith(ROSCOE_PREFIX)]
        means[key] = {n: analysis.mean_or_none(p[n] for p in rows if finite(p.get(n))) for n in names}
    try:
        from segloss.metrics.roscoe import correlations

        corr = correlations([p for rows in per_arm.values() for p in rows])
    except (ImportError, ValueError):  # module absent, or only scores it does not know: means only
        corr = None
    return {"means": means, "correlations": corr}


def _resolve_plan(plan: StudyPlan | str | Path | None, folder: Path | None = None) -> StudyPlan:
    if isinstance(plan, StudyPlan):
        return plan
    if plan is not None:
        return load_plan(plan)
    if folder is not None and (folder / PLAN_FILE).is_file():
        return load_plan(folder / PLAN_FILE)
    return StudyPlan()


def write_results_report(
    results_dir: str | Path, out_dir: str | Path, *, seed: int = 0, plan: StudyPlan | str | Path | None = None
) -> Path:
    """The report of a results folder (``results/<study>``); ``plan`` defaults to the folder's ``plan.yaml``, else
    each loss vs CE. Returns the path of ``report.md``."""
    folder = Path(results_dir)
    cells = load_results(folder)
    counts = {"done": len(cells), "failed": 0, "running": 0, "pending": 0}
    return _write(cells, Path(out_dir), _resolve_plan(plan, folder), seed, f"Study report: `{folder}`", counts, [])


def write_report(
    store_path: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    cells: Collection[str] | None = None,
    plan: StudyPlan | str | Path | None = None,
) -> Path:
    """The report of a result store's done cells; returns the path of ``report.md``. ``cells`` (config hashes)
    keeps only those cells: the demo reports exactly its own grid even when a λ sweep or more seeds share its
    store."""
    from segloss.experiments.store import ResultStore

    store_path = Path(store_path)
    with ResultStore.open_readonly(store_path) as store:  # never writes: refuses what is not a segloss store
        rows, failed, counts = store.rows("done"), store.rows("failed"), store.counts()
    if cells is not None:
        keep = set(cells)
        rows, failed = [r for r in rows if r["config_hash"] in keep], [r for r in failed if r["config_hash"] in keep]
    if not rows:
        raise ValueError(f"store {store_path} has no done cells ({counts}); run `segloss grid` first")
    title = f"Grid report: `{store_path}`"
    return _write(store_results(rows, store_path), Path(out_dir), _resolve_plan(plan), seed, title, counts, failed)


def _write(
    cells: list[CellResult],
    out: Path,
    plan: StudyPlan,
    seed: int,
    title: str,
    counts: dict[str, int],
    failed: list[dict[str, Any]],
) -> Path:
    records = analysis.aggregate(cells, seed=seed)
    items = study(cells, plan=plan)
    head = analysis.headline(items)
    points = sweep_points(cells)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str, Callable[[Path], bool]]] = [
        (
            "differences.png",
            "Each comparison: difference in points, 95 % CI",
            lambda p: plots.plot_differences(items, p),
        ),
        ("em_per_loss.png", "EM per loss (95 % CI over seeds)", lambda p: plots.plot_em_per_loss(records, p)),
        (
            "em_per_seed.png",
            "EM per seed and loss (mean and 95 % CI in red)",
            lambda p: plots.plot_em_per_seed(items, p),
        ),
        ("step_errors.png", "Step-error breakdown per loss", lambda p: plots.plot_step_errors(records, p)),
        (
            "lambda_sweep.png",
            "EM against the CE weight (95 % CI)",
            lambda p: plots.plot_lambda_sweep(items, points, p),
        ),
    ]
    written = {name: title for name, title, draw in figures if draw(out / name)}
    summary = rendering.study_summary(items, plan)
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    payload = {"source": title, "counts": counts, "table": records, "headline": head, "alpha": plan.alpha}
    atomic_write(out / "table.json", json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write(out / "table.csv", rendering.table_csv(records))
    text = rendering.render_markdown(
        title,
        counts,
        records,
        items,
        plan,
        head=head,
        points=points,
        roscoe=roscoe_section(cells),
        plots=written,
        failed=failed,
    )
    report = out / "report.md"
    atomic_write(report, text)
    return report


# -- tables of committed results inside a Markdown page ------------------------------------------------------------
BLOCK = re.compile(r"(<!-- segloss-report ([^>]*?) -->\n)(.*?)(<!-- /segloss-report -->)", re.DOTALL)
TABLES = {
    "losses": lambda item: format_study_table(item),
    "comparisons": lambda item: format_comparisons_table(item),
    "verdicts": lambda item: "\n".join(f"- {r['sentence']}" for r in item["comparisons"]),
}


def fill_doc_blocks(text: str, root: str | Path = ".") -> str:
    """``text`` with every ``segloss-report`` block regenerated from the results it names (paths relative to
    ``root``). Options: ``results=DIR`` (required), ``plan=FILE``, ``table=losses|comparisons|verdicts``,
    ``dataset=NAME`` (default: the first study)."""
    base = Path(root)
    cache: dict[tuple[str, str | None], list[dict[str, Any]]] = {}

    def render(match: re.Match[str]) -> str:
        options = dict(part.split("=", 1) for part in match[2].split())
        if "results" not in options or options.get("table", "losses") not in TABLES:
            raise ValueError(f"segloss-report block {match[2]!r}: give results=DIR and table={'|'.join(TABLES)}")
        key = (options["results"], options.get("plan"))
        if key not in cache:
            folder = base / options["results"]
            plan = _resolve_plan(base / options["plan"] if "plan" in options else None, folder)
            cache[key] = study(load_results(folder), plan=plan)
        items = [i for i in cache[key] if i["dataset"] == options.get("dataset", i["dataset"])]
        if not items:
            raise ValueError(f"segloss-report block {match[2]!r}: no study of that dataset in {options['results']}")
        return match[1] + TABLES[options.get("table", "losses")](items[0]) + "\n" + match[4]

    return BLOCK.sub(render, text)


def update_doc(path: str | Path, root: str | Path = ".") -> bool:
    """Rewrite the ``segloss-report`` blocks of the page at ``path``; True when something changed."""
    page = Path(path)
    text = page.read_text(encoding="utf-8")
    new = fill_doc_blocks(text, root)
    if new != text:
        atomic_write(page, new.encode("utf-8"))
    return new != text
