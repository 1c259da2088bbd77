"""Finished cells as data: the ``results/<study>/<cell>/`` layout, read from a folder or from a result store.

A study's finished cells are small files, committed to the repository so that the report can be regenerated on any
machine without rerunning anything (``segloss report --results results/<study>``)::

    results/<study>/<cell>/
        cell.json            {cell, study, loss, seed, lora_targets, …}: what the cell is (and where/when it ran)
        metrics.json         as written by `segloss eval` ({"metrics": {name: {"mean", "ci_low", "ci_high", "n"}}})
        predictions.jsonl    as written by `segloss eval`: one line per problem, its scores under "metrics"
        train_summary.json   as written by `segloss train` (steps, tokens, wall time, final losses)
        config.yaml          the run's resolved TrainConfig

``scripts/study.sh`` writes this layout for the SmolLM2 study (cell names ``<loss>[-authors]-s<seed>``);
:func:`export_store` writes it for the done cells of a grid's SQLite store (the demo, `segloss grid`), so one reader,
:func:`load_results`, serves both. A cell folder appears whole or not at all (written as ``<cell>.tmp``, then
renamed); an existing cell is never overwritten.

:class:`CellResult` is what the analysis reads: one per finished cell, with its `LossSpec`, LoRA targets, seed,
metric means and per-problem scores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from segloss.experiments.cells import slug, spec_from_values, spec_to_values
from segloss.fileio import read_json_object
from segloss.losses.spec import LossSpec
from segloss.rundir import CONFIG_NAME, SUMMARY_NAME

logger = logging.getLogger(__name__)
CELL_FILE = "cell.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
SUMMARY_FILE = SUMMARY_NAME  # a cell folder keeps the run folder's file names (segloss.rundir)
CONFIG_FILE = CONFIG_NAME
ATTENTION = "attention"  # the default LoRA targets: an arm without a suffix


@dataclasses.dataclass(frozen=True)
class CellResult:
    """One finished cell. ``scores`` maps a problem id to its per-problem metrics (empty without predictions);
    ``metrics`` holds the cell's means; ``train`` its train_summary.json; ``info`` the rest (cell.json, paths)."""

    name: str
    model: str
    dataset: str
    loss_spec: LossSpec
    lora_targets: str
    seed: int
    metrics: dict[str, float]
    scores: dict[str, dict[str, float]]
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def loss(self) -> str:
        """The loss setting: its label plus the options that differ from their defaults (``lovasz[group=sequence]``),
        so that two settings of one loss are two arms."""
        return self.loss_spec.tag

    @property
    def arm(self) -> str:
        """The compared unit: the loss label, with ``-<lora targets>`` unless they are the attention default."""
        return arm_name(self.loss, self.lora_targets)


def arm_name(loss: str, lora_targets: str = ATTENTION) -> str:
    """``lovasz`` on attention targets, ``lovasz-authors`` on the authors' (the study's cell names, less the seed)."""
    return loss if lora_targets == ATTENTION else f"{loss}-{lora_targets}"


def targets_label(value: Any) -> str:
    """A run's ``lora_targets`` (or ``lora_target_modules``) as text: the name, or the module names joined by ``+``."""
    if value is None:
        return ATTENTION
    return "+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def model_name(model: str) -> str:
    """A file path's name (a GGUF file or a local folder differs between machines), a hub id as it is."""
    looks_like_path = model.startswith(("/", ".", "~")) or model.endswith(".gguf")
    return Path(model).name if looks_like_path else model


# -- reading ---------------------------------------------------------------------------------------------------------
def load_results(folder: str | Path) -> list[CellResult]:
    """Every finished cell under ``folder`` (a sub-folder with ``cell.json``), by name; ``*.tmp`` folders (a copy
    that was interrupted) are skipped. ``FileNotFoundError``/``ValueError`` name the folder or the file to fix."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: {root}; pass --results results/<study>")
    cells = [p for p in sorted(root.iterdir()) if (p / CELL_FILE).is_file() and not p.name.endswith(".tmp")]
    if not cells:
        raise ValueError(f"{root} holds no finished cell (no <cell>/{CELL_FILE}); run scripts/study.sh or export one")
    return [read_cell(path) for path in cells]


def read_cell(path: Path) -> CellResult:
    """The :class:`CellResult` of one cell folder (see the module docstring for the files)."""
    info = read_json_object(path / CELL_FILE)
    config = _read_config(path / CONFIG_FILE)
    scores = read_scores(path / PREDICTIONS_FILE)
    metrics = _read_means(path / METRICS_FILE) or _means(scores)
    if not metrics:
        raise ValueError(f"{path}: no {METRICS_FILE} and no {PREDICTIONS_FILE}; the cell has no scores to report")
    try:
        seed = int(info["seed"] if "seed" in info else config["seed"])
        model = str(info.get("model") or config["model"])
        dataset = str(info.get("dataset") or config["dataset"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path}: {CELL_FILE} or {CONFIG_FILE} must give the cell's seed, model and dataset ({err})"
        ) from None
    targets = info.get("lora_targets") or targets_label(
        config.get("lora_target_modules") or config.get("lora_targets")
    )
    return CellResult(
        name=str(info.get("cell") or path.name),
        model=model_name(model),
        dataset=dataset,
        loss_spec=_cell_spec(path, info, config),
        lora_targets=str(targets),
        seed=seed,
        metrics=metrics,
        scores=scores,
        train=read_json_object(path / SUMMARY_FILE, required=False),
        info={**info, "folder": str(path)},
    )


def _cell_spec(path: Path, info: dict[str, Any], config: dict[str, Any]) -> LossSpec:
    """The cell's objective: the exported spec, else the run's config.yaml (a file boundary: parsed here, once)."""
    try:
        if isinstance(info.get("loss_spec"), dict):
            return spec_from_values(info["loss_spec"])
        if "loss" in config:
            return LossSpec.parse(
                config["loss"], ce_weight=config.get("ce_weight"), options=config.get("loss_options")
            )
        return LossSpec.parse(info["loss"])
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: no readable loss in {CELL_FILE} or {CONFIG_FILE} ({err})") from None


def read_scores(path: Path) -> dict[str, dict[str, float]]:
    """``{problem id: {metric: value}}`` from an eval ``predictions.jsonl`` (finite numbers only); {} when absent.

    `segloss eval` nests the per-problem scores under ``metrics``; a flat line is read as it is."""
    if not path.is_file():
        return {}
    scores: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if not line.strip():
                continue
            row = json.loads(line)
            values = row["metrics"] if isinstance(row.get("metrics"), dict) else row
            scores[str(row.get("id", i))] = {k: float(v) for k, v in values.items() if finite(v) and k != "id"}
    return scores


def _means(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    names = dict.fromkeys(k for values in scores.values() for k in values)
    out = {}
    for name in names:
        values = [v[name] for v in scores.values() if name in v]
        out[name] = sum(values) / len(values)
    return out


def _read_means(path: Path) -> dict[str, float]:
    if not path.is_file():
        return {}
    summary = read_json_object(path).get("metrics", {})
    return {k: float(v["mean"]) for k, v in summary.items() if isinstance(v, dict) and finite(v.get("mean"))}


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return values if isinstance(values, dict) else {}


# -- a result store's done cells -----------------------------------------------------------------------------------
def store_results(rows: Iterable[dict[str, Any]], store_path: str | Path | None = None) -> list[CellResult]:
    """:class:`CellResult` of each done store row (its predictions and train summary read from its folders).

    A relative run or eval folder (stores written before the grid recorded absolute paths are relative to the
    directory the grid ran in) is looked up from the current directory, then from each folder above ``store_path``.
    """
    anchors = [Path.cwd(), *(Path(store_path).resolve().parents if store_path else [])]
    return [_row_result(_located(row, anchors)) for row in rows]


def _located(row: dict[str, Any], anchors: list[Path]) -> dict[str, Any]:
    found = {}
    for key in ("run_dir", "eval_dir"):
        value = row.get(key)
        if value and not Path(value).is_absolute():
            found[key] = next((str(a / value) for a in anchors if (a / value).exists()), value)
    return {**row, **found}


def _row_result(row: dict[str, Any]) -> CellResult:
    settings = row.get("settings") or {}
    train = settings.get("train") or {}
    if isinstance(settings.get("loss_spec"), dict):
        spec = spec_from_values(settings["loss_spec"])
    else:  # a store written before cells carried their spec: its loss label and ce_weight, read once here
        spec = LossSpec.parse(row["loss"], ce_weight=train.get("ce_weight"), options=train.get("loss_options"))
    eval_dir = Path(row["eval_dir"]) if row.get("eval_dir") else None
    run_dir = Path(row["run_dir"]) if row.get("run_dir") else None
    targets = targets_label(train.get("lora_target_modules") or train.get("lora_targets"))
    metrics = {k: float(v) for k, v in (row.get("metrics") or {}).items() if finite(v)}
    info = {k: row.get(k) for k in ("config_hash", "cell_index", "run_dir", "eval_dir", "finished_at", "seconds")}
    return CellResult(
        name=row["config_hash"],
        model=model_name(str(row["model"])),
        dataset=str(row["dataset"]),
        loss_spec=spec,
        lora_targets=targets,
        seed=int(row["seed"]),
        metrics=metrics,
        scores=read_scores(eval_dir / PREDICTIONS_FILE) if eval_dir else {},
        train=read_json_object(run_dir / SUMMARY_FILE, required=False) if run_dir else {},
        info={k: (str(v) if isinstance(v, Path) else v) for k, v in info.items()},
    )


def cell_names(results: list[CellResult]) -> list[str]:
    """Folder names for exported cells: ``<loss>[-<targets>]-s<seed>`` (the study's names), prefixed with
    ``<model>__<dataset>__`` when the cells span several models or datasets."""
    prefix = len({(r.model, r.dataset) for r in results}) > 1
    names = []
    for r in results:
        name = f"{slug(r.arm)}-s{r.seed}"
        names.append(f"{slug(r.model)}__{slug(r.dataset)}__{name}" if prefix else name)
    return names


def export_store(
    store_path: str | Path, folder: str | Path, *, study: str | None = None, cells: Collection[str] | None = None
) -> list[Path]:
    """Copy the done cells of a result store into the ``results/<study>/<cell>/`` layout; returns the new folders.

    ``cells`` (config hashes) keeps only those cells. A cell folder that exists already is left as it is (results
    accumulate; nothing is replaced). A cell without a ``metrics.json`` on disk gets one from the store's means."""
    from segloss.experiments.store import ResultStore

    with ResultStore.open_readonly(store_path) as store:
        rows = store.rows("done")
    rows = [r for r in rows if cells is None or r["config_hash"] in set(cells)]
    if not rows:
        raise ValueError(f"store {store_path} has no done cells to export; run `segloss grid` first")
    results = store_results(rows, store_path)
    unscored = [r.name for r in results if not r.scores]
    if unscored:  # the report then falls back to per-seed means: no problem-level analysis
        logger.warning(
            "%d of %d cells have no predictions.jsonl on disk (e.g. %s)", len(unscored), len(rows), unscored[0]
        )
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for row, result, name in zip(rows, results, cell_names(results), strict=True):
        dest = root / name
        if dest.exists():
            continue
        _write_cell(dest, row, result, study or root.name)
        written.append(dest)
    return written


def _write_cell(dest: Path, row: dict[str, Any], result: CellResult, study: str) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sources = [(row.get("eval_dir"), METRICS_FILE), (row.get("eval_dir"), PREDICTIONS_FILE)]
    sources += [(row.get("run_dir"), SUMMARY_FILE), (row.get("run_dir"), CONFIG_FILE)]
    for folder, name in sources:
        if folder and (Path(folder) / name).is_file():
            shutil.copyfile(Path(folder) / name, tmp / name)
    if not (tmp / METRICS_FILE).is_file():
        means = {k: {"mean": v} for k, v in result.metrics.items()}
        (tmp / METRICS_FILE).write_text(json.dumps({"metrics": means}, indent=2) + "\n", encoding="utf-8")
    info = {
        "cell": dest.name,
        "study": study,
        "model": result.model,
        "dataset": result.dataset,
        "loss": result.loss,
        "loss_spec": spec_to_values(result.loss_spec),
        "seed": result.seed,
        "lora_targets": result.lora_targets,
        "config_hash": row["config_hash"],
        "source": "store",
        "train_s": result.metrics.get("train_seconds"),
        "eval_s": result.metrics.get("eval_seconds"),
    }
    (tmp / CELL_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    tmp.rename(dest)  # the cell appears whole or not at all
