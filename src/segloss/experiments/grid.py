"""Grids of train+eval cells (models × datasets × losses × seeds) run into one SQLite result store.

A cell is one (model, dataset, loss, seed): it trains with :func:`segloss.training.train` into its own run directory
and evaluates with :func:`segloss.evaluation.evaluate`; its metrics land in the store
(:class:`~segloss.experiments.store.ResultStore`). Re-running a grid skips done cells and retries failed ones; any
number of workers on one host may share the store (``--shard i/n`` splits the cells up front, and every cell is
claimed atomically under a lease, so workers never run a cell twice and a dead worker's cell is reclaimed). The
cells run in this process (:class:`~segloss.experiments.executors.LocalExecutor`) or as Ray tasks
(:class:`~segloss.experiments.executors.RayExecutor`); either way this process alone writes the store. A crashing
cell is recorded as failed with its traceback and the grid goes on. ``docs/experiments.md`` has the details.

    segloss grid --config configs/grid/paper-gsm8k.yaml
    segloss grid --config configs/grid/paper-gsm8k.yaml --shard 2/8      # worker 2 of 8, same store
    segloss grid --config configs/grid/paper-gsm8k.yaml --executor ray --gpus-per-cell 1
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segloss.config import config_field
from segloss.experiments.cells import Cell, slug
from segloss.experiments.executors import LocalExecutor, Outcome, RayExecutor
from segloss.experiments.store import DEFAULT_LEASE_S, LeaseKeeper, ResultStore
from segloss.losses.spec import LossSpec
from segloss.rundir import RunDir

# Settings the grid sets per cell; they may not appear in the shared ``train``/``eval`` overrides.
CELL_TRAIN_KEYS = ("model", "dataset", "data_path", "loss", "seed", "output_dir")
CELL_EVAL_KEYS = ("run", "seed")
DATASET_KEYS = ("name", "label", "data_path", "options", "train", "eval")
DEFAULT_EVAL_SPLIT = "test"

Runner = Callable[["Cell"], dict[str, Any]]


@dataclasses.dataclass
class GridConfig:
    """Config of ``segloss grid`` (YAML files under ``configs/grid/`` mirror it)."""

    models: list[str] = config_field([], help="Base models: hub ids or local paths, one grid row block per model.")
    datasets: list[Any] = config_field(
        [],
        help="Datasets: names (`gsm8k`) or mappings {name, label, data_path, options, train: {...}, eval: {...}}; "
        "options are the builder's dataset_options, train/eval override the shared settings.",
    )
    losses: list[Any] = config_field(
        ["ce", "lovasz"],
        help="Loss settings: a name (`lovasz`, combined with CE by train.ce_weight), `ce` alone "
        "(the baseline, required), a mapping of weights such as {ce: 0.5, focal: 0.5}, or a mapping "
        "{loss: ..., loss_options: {lovasz: {group: sequence}}} (the TrainConfig fields) for a loss with options.",
    )
    seeds: list[int] = config_field([0, 1, 2], help="Seeds; every (model, dataset, loss) runs once per seed.")
    train: dict[str, Any] = config_field(
        {}, help="Shared TrainConfig settings: segloss's (ce_weight, lora_r…) and any TrainingArguments field."
    )
    eval: dict[str, Any] = config_field({}, help="Shared EvalConfig overrides (e.g. split, limit).")
    output_dir: str = config_field("runs/grid", help="Grid directory: cells write their runs under <output_dir>/runs.")
    store: str | None = config_field(None, help="SQLite result store (default: <output_dir>/results.sqlite).")

    def __post_init__(self) -> None:
        for name in ("models", "datasets", "losses", "seeds"):
            value = getattr(self, name)
            if not isinstance(value, list) or not value:
                raise ValueError(f"{name} must be a non-empty list, got {value!r}; list at least one entry")
        if not all(isinstance(m, str) and m.strip() for m in self.models):
            raise ValueError(f"models must be hub ids or paths (strings), got {self.models!r}")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ValueError(f"seeds must be integers, got {self.seeds!r}")
        _check_unique("seeds", self.seeds)
        _check_unique("models", self.models)
        self.datasets = [_normalize_dataset(d) for d in self.datasets]
        _check_unique("datasets (labels)", [d["label"] for d in self.datasets])
        for name, section, reserved in (("train", self.train, CELL_TRAIN_KEYS), ("eval", self.eval, CELL_EVAL_KEYS)):
            _check_overrides(name, section, reserved)
        # Each loss setting checked up front (with the shared ce_weight and loss_options); cells parse their own.
        labels = [cell_loss_spec(loss, self.train).tag for loss in self.losses]
        _check_unique("losses", labels)
        if "ce" not in labels:
            raise ValueError(f"losses must include `ce` alone as the baseline, got {labels}; add `- ce`")
        if not isinstance(self.output_dir, (str, Path)) or not str(self.output_dir):
            raise ValueError(f"output_dir must be a path, got {self.output_dir!r}")

    @property
    def store_path(self) -> Path:
        return Path(self.store) if self.store else Path(self.output_dir) / "results.sqlite"

    def cells(self) -> list[Cell]:
        """Every cell in grid order (models × datasets × losses × seeds); the index is what ``--shard`` uses."""
        combos = itertools.product(self.models, self.datasets, self.losses, self.seeds)
        return [make_cell(self, i, *combo) for i, combo in enumerate(combos)]


@dataclasses.dataclass
class GridSummary:
    """What one ``run_grid`` call did: cells it ran (done/failed), cells it skipped, and the store's final counts."""

    done: list[str]
    failed: list[str]
    skipped: int
    counts: dict[str, int]
    store: Path
    reclaimed: list[str] = dataclasses.field(default_factory=list)
    skipped_by_status: dict[str, int] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """One line: what this worker did, why it skipped cells, and the store's counts."""
        why = {"done": "done", "running": "held by live workers", "failed": "failed during this run"}
        skipped = ", ".join(f"{n} {why.get(s, s)}" for s, n in sorted(self.skipped_by_status.items()))
        hint = " (--retry-running takes them over)" if self.skipped_by_status.get("running") else ""
        return (
            f"[grid] this worker: {len(self.done)} done, {len(self.failed)} failed, {len(self.reclaimed)} reclaimed "
            f"from dead workers, {self.skipped} skipped"
            + (f" ({skipped}){hint}" if skipped else "")
            + f"; store {self.counts}"
        )


# -- config helpers ---------------------------------------------------------------------------------------------------
# The keys of a loss setting written as TrainConfig fields (a loss with options): {loss: lovasz, loss_options: {...}}.
LOSS_SETTING_KEYS = ("loss", "loss_options", "ce_weight")


def _setting_values(entry: Any) -> dict[str, Any]:
    """The TrainConfig values a grid ``losses`` entry names: ``{loss}`` for a name or a weights mapping; a mapping
    with a ``loss`` key (a loss with options) also its ``loss_options``/``ce_weight``."""
    if not (isinstance(entry, dict) and "loss" in entry):
        return {"loss": entry}
    unknown = sorted(set(entry) - set(LOSS_SETTING_KEYS))
    if unknown:
        raise ValueError(
            f"losses: unknown key(s) {unknown} in {entry}; a loss with options takes {list(LOSS_SETTING_KEYS)}"
        )
    return {key: entry[key] for key in LOSS_SETTING_KEYS if key in entry}


def cell_loss_spec(loss: Any, train: dict[str, Any]) -> LossSpec:
    """The `LossSpec` of one loss setting under a cell's train settings (the entry's own ``ce_weight`` and
    ``loss_options`` win over the shared ones)."""
    values = {**train, **_setting_values(loss)}
    try:
        return LossSpec.parse(values["loss"], ce_weight=values.get("ce_weight"), options=values.get("loss_options"))
    except ValueError as err:
        raise ValueError(f"losses: {err}") from None


def loss_setting(entry: Any, train: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """A grid ``losses`` entry as (cell label, the TrainConfig values it sets).

    The label is the spec's tag: ``"lovasz"``, ``"ce"``, ``"ce=0.5,focal=0.5"``, or with options that differ from
    their defaults ``"lovasz[group=sequence]"``. ``loss`` is set to the spec's canonical text (a task name is
    combined with CE by ``train.ce_weight``); an entry's own ``loss_options``/``ce_weight`` are set with it.
    """
    spec = cell_loss_spec(entry, train or {})
    return spec.tag, {**_setting_values(entry), "loss": spec.label}


def loss_label(spec: Any) -> str:
    """The cell label of a loss setting (see :func:`loss_setting`)."""
    return loss_setting(spec)[0]


def _check_unique(field: str, values: list[Any]) -> None:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"{field} has duplicates {seen}; list each once")


def _check_overrides(name: str, section: Any, reserved: tuple[str, ...]) -> None:
    if not isinstance(section, dict):
        raise ValueError(f"{name} must be a mapping of {name} settings, got {section!r}")
    clash = sorted(set(section) & set(reserved))
    if clash:
        raise ValueError(
            f"{name}: {clash} are set per cell by the grid; remove them (list models/datasets/losses/"
            f"seeds in their own fields, and set output_dir at the top level)"
        )


def _normalize_dataset(entry: Any) -> dict[str, Any]:
    """A dataset entry as ``{name, label, data_path, train, eval}`` (``options`` become train.dataset_options)."""
    if isinstance(entry, str) and entry.strip():
        entry = {"name": entry.strip()}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ValueError(f"datasets: each entry must be a name or a mapping with a `name`, got {entry!r}")
    unknown = sorted(set(entry) - set(DATASET_KEYS))
    if unknown:
        raise ValueError(f"datasets: unknown key(s) {unknown} in {entry['name']!r}; valid keys: {list(DATASET_KEYS)}")
    out = {
        "name": entry["name"],
        "label": str(entry.get("label") or entry["name"]),
        "data_path": entry.get("data_path"),
        "train": dict(entry.get("train") or {}),
        "eval": dict(entry.get("eval") or {}),
    }
    if entry.get("options") is not None:
        if not isinstance(entry["options"], dict):
            raise ValueError(f"datasets[{out['label']}].options must be a mapping of builder options")
        out["train"]["dataset_options"] = dict(entry["options"])
    _check_overrides(f"datasets[{out['label']}].train", out["train"], CELL_TRAIN_KEYS)
    _check_overrides(f"datasets[{out['label']}].eval", out["eval"], CELL_EVAL_KEYS)
    return out


def config_hash(train: dict[str, Any], eval: dict[str, Any]) -> str:
    """Stable 16-hex hash of a cell's settings (JSON with sorted keys; output paths are excluded by the caller)."""
    blob = json.dumps({"train": train, "eval": eval}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_cell(config: GridConfig, index: int, model: str, dataset: dict[str, Any], loss: Any, seed: int) -> Cell:
    """Resolve one cell: shared overrides < dataset overrides < the cell's own model/dataset/loss/seed.

    ``loss`` is a grid ``losses`` entry; its `LossSpec` is parsed here, once, under the shared and dataset settings
    (a dataset's own ``ce_weight``/``loss_options`` apply) and travels with the cell into the store and report."""
    shared = {**config.train, **dataset["train"]}
    spec = cell_loss_spec(loss, shared)
    label = spec.tag
    loss_values = {**_setting_values(loss), "loss": spec.label}
    train = {**shared, "model": model, "dataset": dataset["name"], **loss_values, "seed": seed}
    if dataset["data_path"] is not None:
        train["data_path"] = str(dataset["data_path"])
    eval_settings = {"split": DEFAULT_EVAL_SPLIT, **config.eval, **dataset["eval"], "seed": seed}
    digest = config_hash(train, {k: v for k, v in eval_settings.items() if k != "output_dir"})
    name = f"{slug(model)}__{slug(dataset['label'])}__{slug(label)}__seed{seed}-{digest[:8]}"
    run_dir = Path(config.output_dir) / "runs" / name
    eval_dir = Path(eval_settings.get("output_dir") or RunDir(run_dir).eval_dir(str(eval_settings["split"])))
    if "output_dir" in eval_settings:
        eval_dir = eval_dir / name  # a shared eval output_dir still gets one folder per cell
    return Cell(
        index=index,
        model=model,
        dataset=dataset["label"],
        loss=label,
        loss_spec=spec,
        seed=seed,
        train=train,
        eval=eval_settings,
        run_dir=run_dir,
        eval_dir=eval_dir,
        config_hash=digest,
    )


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` → ``(2, 8)``: worker 2 of 8 (1-based), which runs the cells whose index % 8 == 1."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"--shard must look like i/n (e.g. 2/8), got {text!r}")
    shard = int(match[1]), int(match[2])
    _check_shard(shard)
    return shard


def _check_shard(shard: tuple[int, int]) -> None:
    i, n = shard
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard i/n needs 1 <= i <= n, got {i}/{n}")


def select_shard(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """The cells of worker ``i`` of ``n``: those whose grid index % n == i - 1 (all cells when ``shard`` is None)."""
    if shard is None:
        return list(cells)
    _check_shard(shard)
    i, n = shard
    return [c for c in cells if c.index % n == i - 1]


# -- running ----------------------------------------------------------------------------------------------------------
def train_and_evaluate(cell: Cell) -> dict[str, Any]:
    """The default runner: train the cell, evaluate it, return ``{metric: mean}`` plus train/eval seconds."""
    from segloss.config import config_from_values
    from segloss.evaluation import EvalConfig, evaluate

    train_seconds = _train_cell(cell)
    start = time.perf_counter()
    eval_values = {**cell.eval, "run": str(cell.run_dir), "output_dir": str(cell.eval_dir)}
    result = evaluate(config_from_values(EvalConfig, eval_values, f"cell {cell.index} eval"))
    summary = result.get("metrics", result)  # evaluate() returns metrics.json: {"metrics": {name: {"mean", ...}}}
    metrics = {k: (v["mean"] if isinstance(v, dict) else v) for k, v in summary.items()}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {**metrics, "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - start}


def _train_cell(cell: Cell) -> float:
    """Train into the cell's run dir; returns the training seconds. A retried cell resumes or skips training."""
    from segloss.training import train
    from segloss.training.config import train_config_from_values

    summary = RunDir(cell.run_dir).summary()
    if summary is not None:  # an earlier attempt finished training and failed later: evaluate only
        return float(summary.get("wall_time_s", 0.0))
    values = {**cell.train, "output_dir": str(cell.run_dir)}
    started_before = cell.run_dir.is_dir() and any(cell.run_dir.iterdir())
    if started_before and not (values.get("resume") or values.get("overwrite")):
        values["resume"] = True  # continue from the last checkpoint of the crashed attempt
    start = time.perf_counter()
    train(train_config_from_values(values, f"cell {cell.index} train"))
    return time.perf_counter() - start


def check_default_runner(cells: list[Cell]) -> None:
    """Fail before any work when a cell's settings do not fit TrainConfig/EvalConfig (unknown keys, bad values)."""
    from segloss.config import check_keys
    from segloss.evaluation import EvalConfig
    from segloss.training.config import train_config_from_values

    checked: set[str] = set()
    for cell in cells:
        # Cells that differ only in their seed have the same settings to check (a TrainConfig takes ~1 s to build;
        # a 10-seed grid would check each setting 10 times).
        key = config_hash({k: v for k, v in cell.train.items() if k != "seed"}, {})
        if key not in checked:
            checked.add(key)
            train_config_from_values({**cell.train, "output_dir": str(cell.run_dir)}, "grid train settings")
        check_keys(EvalConfig, {**cell.eval, "run": "", "output_dir": ""}, "grid eval settings")


def run_grid(
    config: GridConfig,
    *,
    shard: tuple[int, int] | None = None,
    runner: Runner | None = None,
    retry_running: bool = False,
    worker: str | None = None,
    log: Callable[[str], None] | None = print,
    executor: LocalExecutor | RayExecutor | None = None,
    lease_s: float = DEFAULT_LEASE_S,
) -> GridSummary:
    """Run this worker's cells of the grid into the store; returns what it did.

    ``shard=(i, n)`` keeps the cells whose index % n == i - 1; within them every cell is claimed atomically under a
    lease (``lease_s``, renewed by a heartbeat), so workers started with or without shards never run a cell twice,
    and a cell whose worker died is reclaimed by the next one. ``runner(cell) -> {metric: value}`` defaults to
    :func:`train_and_evaluate`. ``executor`` (default :class:`LocalExecutor`) runs the claimed cells; this process
    alone writes the store. An exception in a cell marks it failed (with the traceback's tail) and the grid goes on;
    KeyboardInterrupt marks the running cells failed ("interrupted") and stops. ``retry_running`` also takes over
    cells left ``running`` by any worker that claimed them before this one started.
    """
    executor = executor or LocalExecutor()
    # Absolute run folders in the store: tasks may run in another directory or node, and a report or export may
    # read the store from anywhere.
    config = dataclasses.replace(config, output_dir=str(Path(config.output_dir).resolve()))
    cells = config.cells()
    mine = select_shard(cells, shard)
    if runner is None:
        check_default_runner(mine)
        runner = train_and_evaluate
    check_output_dir(config.output_dir, shared=executor.name != "local")
    say = log or (lambda _msg: None)
    executor.check()
    try:
        with ResultStore(config.store_path, worker=worker, lease_s=lease_s) as store, LeaseKeeper(store) as keeper:
            store.register(c.as_row() for c in cells)
            save_grid_config(config)
            driver = GridDriver(store, keeper, retry_running=retry_running, say=say)
            executor.run(driver, mine, runner)
            counts = store.counts()
    finally:
        executor.close()  # stops a Ray instance the executor started, whatever happened
    summary = driver.summary(counts, config.store_path)
    say(summary.describe())
    return summary


def check_output_dir(path: str | Path, *, shared: bool = False) -> None:
    """Fail before any work when ``output_dir`` cannot be written (created if missing; a probe file is written and
    removed). ``shared``: the cells run elsewhere (Ray), so the message reminds that every node must see it."""
    folder = Path(path)
    where = " on a file system every Ray node mounts at the same path" if shared else ""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".segloss-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output_dir: cannot write to {folder} ({err}); pick a writable folder{where}") from None


class GridDriver:
    """The store's one writer during a grid: claims cells under leases, records outcomes, reports what it did."""

    def __init__(
        self, store: ResultStore, keeper: LeaseKeeper, *, retry_running: bool, say: Callable[[str], None]
    ) -> None:
        self.store, self.keeper, self.say = store, keeper, say
        self.started = time.time()
        self.retry_running = retry_running
        self.done: list[str] = []
        self.failed: list[str] = []
        self.reclaimed: list[str] = []
        self.skipped: dict[str, int] = {}  # status → cells not claimed

    def claim(self, cell: Cell) -> bool:
        claim = self.store.try_claim(cell.config_hash, since=self.started, retry_running=self.retry_running)
        if claim is None:
            status = (self.store.get(cell.config_hash) or {}).get("status", "?")
            self.skipped[status] = self.skipped.get(status, 0) + 1
            return False
        self.keeper.hold(cell.config_hash)
        if claim.reclaimed_from:
            self.reclaimed.append(cell.config_hash)
            self.say(f"[grid] cell {cell.index}: reclaimed from {claim.reclaimed_from}: {claim.reason}")
        self.say(f"[grid] cell {cell.index}: {cell.model} / {cell.dataset} / {cell.loss} / seed {cell.seed}")
        return True

    def record(self, cell: Cell, outcome: Outcome) -> None:
        self.keeper.release(cell.config_hash)
        if outcome.status == "done":
            kept = self.store.finish(cell.config_hash, outcome.metrics, seconds=outcome.seconds)
        else:
            kept = self.store.fail(cell.config_hash, outcome.error or "failed", seconds=outcome.seconds)
            last = (outcome.error or "").strip().splitlines()[-1:] or ["?"]
            self.say(f"[grid] cell {cell.index} failed: {last[0]}")
        if not kept:
            self.say(f"[grid] cell {cell.index}: result dropped, another worker reclaimed it (this lease expired)")
            return
        (self.done if outcome.status == "done" else self.failed).append(cell.config_hash)

    def interrupted(self, cells: Sequence[Cell], why: str) -> None:
        for cell in cells:
            self.keeper.release(cell.config_hash)
            if self.store.fail(cell.config_hash, why):
                self.failed.append(cell.config_hash)
        self.say(f"[grid] {len(cells)} cell(s) recorded as {why}")

    def summary(self, counts: dict[str, int], store: Path) -> GridSummary:
        return GridSummary(
            done=self.done,
            failed=self.failed,
            skipped=sum(self.skipped.values()),
            counts=counts,
            store=store,
            reclaimed=self.reclaimed,
            skipped_by_status=dict(self.skipped),
        )


def save_grid_config(config: GridConfig) -> Path:
    """Write the resolved grid to ``<output_dir>/grid.yaml`` (atomically: `save_yaml` renames a per-process file)."""
    from segloss.config import save_yaml

    path = Path(config.output_dir) / "grid.yaml"
    save_yaml(config, path, command=f"segloss grid --config {path}")
    return path
