"""The embedded default: the whole method on a laptop CPU in minutes, with no network (``segloss demo``).

1. generate the synthetic ``arith`` dataset (:mod:`segloss.data.arith`; one seed draws disjoint train/test splits);
2. train a BPE tokenizer and pretrain a tiny Llama with plain CE on the train split written in *another* answer
   format — the steps in words (``12 plus 5 is 17. The answer is 17.``) — so that the base can do the arithmetic
   but has never seen the target format (:func:`segloss.experiments.pretrain.pretrain_base_model`, cached under the
   user cache dir and reused); the base is evaluated on the target format first (EM and well-formedness near 0);
3. fine-tune that base with LoRA into the GSM8K formula format (``<<12+5=17>> #### 17``) once per loss and seed
   (the five losses, 3 seeds by default), paired: every loss sees the same seeds, data and data order, on the first
   ``n_finetune`` train problems — which pretraining left out; here fine-tuning is what teaches the answer;
4. evaluate each on the held-out test split (greedy decoding) and print the report's study table: per loss EM over
   seeds with its 95 % CI, the relative change vs CE with its CI, a paired test over seeds and problems
   (Holm-corrected across the losses), and one sentence of verdict per loss.

Steps 3–4 are a grid (:func:`segloss.experiments.grid.run_grid`) and every number comes from the grid report
(:func:`segloss.experiments.report.write_report`, which also writes ``report/summary.json``), so the demo's numbers go
through exactly the code of the paper grids. Everything is seeded: the same seed gives the same table.
``smoke=True`` shrinks every size (2 seeds; tests).

    from segloss.experiments.demo import DemoConfig, run_demo
    result = run_demo(DemoConfig(losses="all", n_seeds=5))
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from segloss.config import config_field, config_to_dict
from segloss.defaults import DEFAULT_CE_WEIGHT
from segloss.experiments.pretrain import (
    MARKER,
    PretrainConfig,
    base_model_dir,
    is_complete,
    pretrain_base_model,
)
from segloss.fileio import atomic_write

ALL_LOSSES = ("ce", "focal", "gdice", "sadl", "lovasz")
DEFAULT_LOSSES = ALL_LOSSES
DEMO_DATASET = "arith"
#: The most fine-tuning processes the demo starts by default (each holds torch, transformers and a tiny model).
MAX_WORKERS = 4
LOG_NAME = "demo.log"


class DemoFailed(RuntimeError):
    """A fine-tune or evaluation of the demo failed (the others ran; the store has the error)."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """Every size of one demo flavour (full or smoke): data, base model, fine-tuning and evaluation."""

    arith: dict[str, Any]  # arith builder options (difficulty knobs and split sizes); fine-tuning/eval format
    pretrain_format: str  # arith answer_format of the base's corpus: not the target format (fine-tuning teaches it)
    n_seeds: int  # fine-tuning seeds per loss (seed, seed + 1, …), the same for every loss
    n_finetune: int  # first train problems: LoRA fine-tuning data; the rest of the train split pretrains the base
    pretrain: dict[str, Any]  # PretrainConfig fields
    train: dict[str, Any]  # TrainConfig fields shared by every loss
    eval: dict[str, Any]  # EvalConfig fields


# Tuned by measurement on the 2-core CPU machine (docs/demo.md): the base learns the arithmetic in the tagged format
# (0 % on the target format); 200 LoRA steps at LR 6e-3 teach the target format on every seed (CE: 100 % well-formed,
# 6.7 % EM over 3 seeds; 100 steps left it half-learnt once prompt and answer were tokenized as one text: 12-90 %
# well-formed by seed; LR 2e-3 left it unlearnt: 0 %), with most of the range left for the losses to differ.
FULL = Preset(
    arith={
        "n_train": 20800,
        "n_validation": 0,
        "n_test": 200,
        "min_steps": 1,
        "max_steps": 3,
        "max_value": 100,
        "max_factor": 5,
        "distractors": 1,
    },
    pretrain_format="tagged",
    n_seeds=3,
    n_finetune=800,
    pretrain={
        "vocab_size": 768,
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "max_length": 160,
        "max_steps": 800,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "warmup_steps": 50,
    },
    train={
        "max_steps": 200,
        "per_device_train_batch_size": 16,
        "learning_rate": 6e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 10,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "max_length": 160,
    },
    eval={"split": "test", "max_new_tokens": 64, "batch_size": 50},
)
SMOKE = Preset(
    arith={
        "n_train": 120,
        "n_validation": 0,
        "n_test": 16,
        "min_steps": 1,
        "max_steps": 2,
        "max_value": 20,
        "max_factor": 3,
        "distractors": 0,
    },
    pretrain_format="tagged",
    n_seeds=2,
    n_finetune=24,
    pretrain={
        "vocab_size": 300,
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "max_length": 96,
        "max_steps": 30,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "warmup_steps": 3,
    },
    train={
        "max_steps": 4,
        "per_device_train_batch_size": 8,
        "learning_rate": 2e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "max_length": 96,
    },
    eval={"split": "test", "max_new_tokens": 32, "batch_size": 16},
)


@dataclasses.dataclass
class DemoConfig:
    """Settings of ``segloss demo``; the sizes come from the full or the smoke preset unless overridden."""

    losses: str | list[str] = config_field(
        list(DEFAULT_LOSSES),
        help="Losses to compare: a list of names (ce is the baseline and always runs first), "
        "a comma-separated string, or `all` (the default) for ce, focal, gdice, sadl, lovasz.",
    )
    ce_weight: float = config_field(
        DEFAULT_CE_WEIGHT, help="CE weight combined with each task loss (the task loss gets the rest)."
    )
    seed: int = config_field(0, help="Seed of the data and the base model, and the first fine-tuning seed.")
    n_seeds: int | None = config_field(
        None, help="Fine-tuning seeds per loss: seed, seed+1, … (default 3; 2 with --smoke). Same for every loss."
    )
    base_only: bool = config_field(
        False, help="Only pretrain (or reuse) the base model and print its directory (for `segloss grid --models`)."
    )
    smoke: bool = config_field(False, help="Tiny sizes (about a minute, for tests); metrics mean nothing then.")
    output_dir: str = config_field("runs/demo", help="Runs, result store, report and table go here.")
    cache_dir: str | None = config_field(
        None, help="Where the pretrained base is cached (default $XDG_CACHE_HOME/segloss or ~/.cache/segloss)."
    )
    resume: bool = config_field(
        False, help="Keep finished fine-tunes of an earlier demo in output_dir (default: start over, base reused)."
    )
    workers: int | None = config_field(
        None,
        help="Fine-tunes run at once, each in its own process on one CPU thread (default: the CPUs this process "
        f"may use, at most {MAX_WORKERS}; 1 runs them one after the other in this process).",
    )
    pretrain_steps: int | None = config_field(None, help="Override the preset's pretraining steps.")
    finetune_steps: int | None = config_field(None, help="Override the preset's LoRA fine-tuning steps per loss.")
    n_test: int | None = config_field(None, help="Override the number of held-out test problems.")

    def __post_init__(self) -> None:
        self.losses = resolve_losses(self.losses)
        if not 0.0 <= self.ce_weight < 1.0:
            raise ValueError(f"ce_weight must be in [0, 1) so that the task loss has a weight, got {self.ce_weight}")
        for name in ("pretrain_steps", "finetune_steps", "n_test", "n_seeds", "workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or unset, got {value!r}")
        if not str(self.output_dir).strip():
            raise ValueError("output_dir must be a directory path, e.g. --output-dir runs/demo")

    @property
    def preset(self) -> Preset:
        base = SMOKE if self.smoke else FULL
        arith = {**base.arith, **({"n_test": self.n_test} if self.n_test else {})}
        pretrain = {**base.pretrain, **({"max_steps": self.pretrain_steps} if self.pretrain_steps else {})}
        train = {**base.train, **({"max_steps": self.finetune_steps} if self.finetune_steps else {})}
        n_seeds = self.n_seeds or base.n_seeds
        return dataclasses.replace(base, arith=arith, pretrain=pretrain, train=train, n_seeds=n_seeds)

    @property
    def seeds(self) -> list[int]:
        """The fine-tuning seeds, shared by every loss (paired comparison)."""
        return list(range(self.seed, self.seed + self.preset.n_seeds))

    @property
    def n_workers(self) -> int:
        """Fine-tuning processes: ``workers``, else the CPUs available (at most :data:`MAX_WORKERS` and the cells)."""
        n_cells = len(self.losses) * len(self.seeds)
        return self.workers or max(1, min(available_cpus(), MAX_WORKERS, n_cells))


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_losses(losses: str | list[str]) -> list[str]:
    """``"all"`` → the five losses; a string → its comma-separated names; CE first, each name once, all known."""
    from segloss.losses import LOSSES

    if isinstance(losses, str):
        names = list(ALL_LOSSES) if losses.strip() == "all" else [n.strip() for n in losses.split(",") if n.strip()]
    elif isinstance(losses, (list, tuple)):
        names = [str(n).strip() for n in losses]
    else:
        raise ValueError(f"losses must be a list of names or `all`, got {losses!r}")
    unknown = sorted(set(names) - set(LOSSES))
    if unknown:
        raise ValueError(f"losses: unknown loss name(s) {unknown}; valid names: {sorted(LOSSES)} or `all`")
    ordered = ["ce"] + [n for n in dict.fromkeys(names) if n != "ce"]
    if len(ordered) < 2:
        raise ValueError("losses: name at least one task loss besides the ce baseline, e.g. --losses [ce, lovasz]")
    return ordered


def pretrain_config(config: DemoConfig) -> PretrainConfig:
    """The base model's settings: the demo's arith data (seeded), minus the fine-tuning problems."""
    preset = config.preset
    return PretrainConfig(
        dataset=DEMO_DATASET,
        split="train",
        dataset_options={**preset.arith, "answer_format": preset.pretrain_format},
        data_seed=config.seed,
        skip_examples=preset.n_finetune,
        seed=config.seed,
        cache_dir=config.cache_dir,
        **preset.pretrain,
    )


def grid_config(config: DemoConfig, base_model: Path) -> Any:
    """The demo's steps 3–4 as a grid: one model, one dataset, every loss × every seed."""
    from segloss.experiments.grid import GridConfig

    preset = config.preset
    out = Path(config.output_dir)
    train = {
        **preset.train,
        "train_limit": preset.n_finetune,
        "ce_weight": config.ce_weight,
        "save_steps": preset.train["max_steps"],
        "save_total_limit": 1,
        "logging_steps": max(1, preset.train["max_steps"] // 10),
        "disable_tqdm": True,  # the demo prints one progress line per stage
    }
    evaluation = {**preset.eval, "limit": preset.arith["n_test"], "device": "cpu"}
    dataset = {"name": DEMO_DATASET, "label": DEMO_DATASET, "options": dict(preset.arith)}
    return GridConfig(
        models=[str(base_model)],
        datasets=[dataset],
        losses=list(config.losses),
        seeds=config.seeds,
        train=train,
        eval=evaluation,
        output_dir=str(out),
        store=str(out / "results.sqlite"),
    )


def _start_over(out: Path) -> None:
    """Remove what an earlier demo wrote into ``out`` (only the demo's own files)."""
    for name in ("runs", "report", "logs"):
        shutil.rmtree(out / name, ignore_errors=True)
    shutil.rmtree(out / "base_eval", ignore_errors=True)
    for path in [*out.glob("results.sqlite*"), out / "demo.json", out / "table.md", out / LOG_NAME]:
        path.unlink(missing_ok=True)


def evaluate_base(config: DemoConfig, base: Path) -> dict[str, Any]:
    """The base before fine-tuning, scored on the target (formula) format: ``{metric: mean}`` of the test split."""
    from segloss.config import config_from_values
    from segloss.evaluation import EvalConfig, evaluate

    preset = config.preset
    values = {
        **preset.eval,
        "model": str(base),
        "dataset": DEMO_DATASET,
        "dataset_options": dict(preset.arith),
        "limit": preset.arith["n_test"],
        "device": "cpu",
        "seed": config.seed,
        "output_dir": str(Path(config.output_dir) / "base_eval"),
    }
    result = evaluate(config_from_values(EvalConfig, values, "demo base evaluation"))
    return {k: v["mean"] for k, v in result["metrics"].items() if isinstance(v, dict)}


class Lines:
    """What the demo prints: one line per stage. On a terminal the running stage's line is rewritten in place
    (``update``); elsewhere (a log, CI) only the finished line appears (``say``)."""

    def __init__(self, log: Callable[[str], Any] | None) -> None:
        # ``print`` is bound to today's stdout: the demo sends library output to its log file while it runs.
        self.stream: IO[str] | None = sys.stdout if log is print else None
        self.log: Callable[[str], Any] | None = log
        if self.stream is not None:
            stream = self.stream
            self.log = lambda text: print(text, file=stream, flush=True)
        self.live = self.stream is not None and self.stream.isatty()
        self._open = False

    def update(self, text: str) -> None:
        if self.live and self.stream is not None:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._open = True

    def say(self, text: str) -> None:
        if self._open and self.stream is not None:
            self.stream.write("\r\x1b[K")
            self._open = False
        if self.log is not None:
            self.log(text)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


@contextlib.contextmanager
def quiet_libraries(log_file: IO[str]) -> Iterator[None]:
    """While the demo runs, library output goes to its log file, not the terminal: stdout and stderr (the
    evaluations' summaries, Python warnings) are redirected there, and the progress bars and notices of transformers
    and datasets are switched off. Everything is restored afterwards."""
    import datasets
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), datasets.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        with contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
        if bars:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch on ``n`` intra-op threads inside the block (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_demo(config: DemoConfig, *, log: Any = print) -> dict[str, Any]:
    """Run the demo; returns ``{"summary", "table", "verdicts", "base", "base_model", "report", "seconds", …}``.

    ``summary`` is the report's ``summary.json`` (per loss: ``n_seeds``, ``em_mean``, ``em_ci``,
    ``rel_change_vs_ce``, ``rel_change_ci``, ``p_value`` (Holm-adjusted), ``verdict``, IoU, step errors, train
    seconds and tokens); ``base`` the base model's metrics before fine-tuning. Also writes ``table.md``,
    ``demo.json``, the log of the libraries' output (``demo.log``) into ``output_dir`` and the report
    (``report/``). ``log(line)`` gets one line per stage (``print``: on a terminal the running stage's line shows
    its progress). A failed fine-tune or evaluation raises :class:`DemoFailed` with the cell's error, after the
    other cells ran. ``base_only`` stops after step 2.
    """
    lines = Lines(log)
    started = time.perf_counter()
    out = Path(config.output_dir)
    if not config.resume and not config.base_only:
        _start_over(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.base_only:
        with (out / LOG_NAME).open("a") as log_file, quiet_libraries(log_file):
            base, _, _ = _base_model(config, lines)
        print(base)
        return {"base_model": str(base)}
    seconds: dict[str, float] = {}
    with (out / LOG_NAME).open("a") as log_file, quiet_libraries(log_file):
        tick = time.perf_counter()
        base, cached, pretrain_summary = _base_model(config, lines)
        seconds["data_and_pretrain"] = time.perf_counter() - tick
        tick = time.perf_counter()
        base_metrics = evaluate_base(config, base)
        seconds["base_eval"] = time.perf_counter() - tick
        em, well_formed = base_metrics["exact_match"], base_metrics.get("well_formed", 0.0)
        lines.say(
            f"[demo]     the base before fine-tuning, on the target format: EM {100 * em:.1f} %, "
            f"well-formed {100 * well_formed:.1f} %"
        )
        tick = time.perf_counter()
        grid = grid_config(config, base)
        failed = _run_cells(config, grid, lines)
        seconds["finetune_and_eval"] = time.perf_counter() - tick
        result = _finish(config, grid, base, cached, pretrain_summary, base_metrics, seconds, started, lines)
    if failed:
        raise DemoFailed(f"demo: {len(failed)} fine-tune/eval cell(s) failed; see {grid.store_path}")
    return result


def _base_model(config: DemoConfig, lines: Lines) -> tuple[Path, bool, dict[str, Any]]:
    from segloss.data import load_examples

    preset = config.preset
    test = load_examples(DEMO_DATASET, "test", seed=config.seed, **preset.arith)
    lines.say(
        f"[demo] 1/4 arith (seed {config.seed}): {preset.arith['n_train']} train problems "
        f"({preset.n_finetune} for fine-tuning, the rest pretrain the base in the {preset.pretrain_format!r} "
        f"format), {len(test)} held-out test problems"
    )
    pre = pretrain_config(config)
    cached = is_complete(base_model_dir(pre))
    started = time.perf_counter()

    def progress(step: int, steps: int) -> None:
        lines.update(
            f"[demo] 2/4 pretraining the base model: step {step}/{steps} ({_clock(time.perf_counter() - started)})"
        )

    base = pretrain_base_model(pre, progress=progress)
    pretrain_summary = json.loads((base / MARKER).read_text())
    how = "reused from the cache" if cached else f"pretrained in {_clock(time.perf_counter() - started)}"
    lines.say(
        f"[demo] 2/4 base model {base} ({how}, {pretrain_summary['n_parameters']:,} parameters, final CE "
        f"{pretrain_summary['final_train_loss']:.3f})"
    )
    return base, cached, pretrain_summary


def _run_cells(config: DemoConfig, grid: Any, lines: Lines) -> list[str]:
    """Fine-tune and evaluate every cell, ``config.n_workers`` at a time; returns the config hashes that failed.

    This process runs cells itself while ``n_workers - 1`` plain ``segloss grid`` processes share the store with it
    (each claims cells atomically, so every cell runs once). Every cell runs on one torch thread, wherever it runs,
    so the numbers do not depend on the number of workers.
    """
    from segloss.experiments.grid import run_grid, save_grid_config

    n_cells, workers = len(grid.cells()), min(config.n_workers, len(grid.cells()))
    stage = (
        f"[demo] 3/4 LoRA fine-tuning into the formula format and evaluating: {n_cells} cells (losses "
        f"{', '.join(config.losses)} × seeds {', '.join(map(str, config.seeds))}) on {workers} worker(s)"
    )
    started = time.perf_counter()
    own = {cell.config_hash for cell in grid.cells()}
    counts = functools.partial(_own_counts, grid.store_path, own)
    lines.update(f"{stage}: starting")

    def tick() -> None:
        lines.update(f"{stage}: {counts()[0]}/{n_cells} done ({_clock(time.perf_counter() - started)})")

    helpers: list[subprocess.Popen[bytes]] = []
    with _ticker(tick if lines.live else None):
        try:
            grid_yaml = save_grid_config(grid)
            helpers = [_start_worker(grid_yaml, Path(config.output_dir), i) for i in range(2, workers + 1)]
            with torch_threads(1):
                run_grid(grid, log=print)  # into the log file
                codes = [helper.wait() for helper in helpers]
                if any(code not in (0, 1) for code in codes):  # a worker died: its cell is reclaimed here
                    run_grid(grid, log=print)
        finally:
            _stop(helpers)
    done, failed = counts()
    lines.say(f"{stage}: {done} done, {len(failed)} failed, in {_clock(time.perf_counter() - started)}")
    return failed


def _own_counts(store_path: Path, own: set[str]) -> tuple[int, list[str]]:
    """(done cells, failed or unfinished cells) of the demo's own grid in the store."""
    from segloss.experiments.store import ResultStore

    try:
        with ResultStore.open_readonly(store_path) as store:
            rows = [row for row in store.rows() if row["config_hash"] in own]
    except (FileNotFoundError, ValueError):  # not created yet
        return 0, sorted(own)
    done = [row["config_hash"] for row in rows if row["status"] == "done"]
    return len(done), sorted(own - set(done))


@contextlib.contextmanager
def _ticker(tick: Callable[[], None] | None, every_s: float = 1.0) -> Iterator[None]:
    """Call ``tick`` every ``every_s`` seconds from a daemon thread while the block runs (None: nothing)."""
    if tick is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            tick()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _start_worker(grid_yaml: Path, out: Path, number: int) -> subprocess.Popen[bytes]:
    """A plain ``segloss grid`` process on the demo's grid, one torch thread, its output in ``logs/worker-N.log``."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    (out / "logs").mkdir(parents=True, exist_ok=True)
    with (out / "logs" / f"worker-{number}.log").open("ab") as log_file:
        command = [sys.executable, "-m", "segloss.cli", "grid", "--config", str(grid_yaml)]
        return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _stop(helpers: list[subprocess.Popen[bytes]]) -> None:
    """Stop the worker processes that still run (after Ctrl-C: SIGTERM, so each records its cell as interrupted)."""
    for helper in helpers:
        if helper.poll() is None:
            helper.terminate()
    for helper in helpers:
        try:
            helper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()


def _finish(
    config: DemoConfig,
    grid: Any,
    base: Path,
    cached: bool,
    pretrain_summary: dict[str, Any],
    base_metrics: dict[str, float],
    seconds: dict[str, float],
    started: float,
    lines: Lines,
) -> dict[str, Any]:
    """Write the report, print its study table and verdicts, and save ``table.md`` and ``demo.json``."""
    from segloss.experiments.report import StudyPlan, format_study_table, write_report

    out = Path(config.output_dir)
    own = [cell.config_hash for cell in grid.cells()]  # a sweep or more seeds may share the store
    plan = StudyPlan(margin_points=2.5, planning_sd_points=2.0)  # docs/study-plan.md, "The embedded study"
    report = write_report(grid.store_path, out / "report", seed=config.seed, cells=own, plan=plan)
    summary = json.loads((report.parent / "summary.json").read_text())
    study = summary["studies"][0] if summary["studies"] else None
    table = format_study_table(study) if study else "(no CE baseline finished: nothing to compare)"
    verdicts = [e["verdict"] for e in study["losses"].values()] if study else []
    seconds["total"] = time.perf_counter() - started
    result = {
        "config": config_to_dict(config),
        "seeds": config.seeds,
        "base_model": str(base),
        "base_cached": cached,
        "pretrain": {k: v for k, v in pretrain_summary.items() if k != "log_history"},
        "base": base_metrics,
        "summary": summary,
        "table": table,
        "verdicts": verdicts,
        "report": str(report),
        "store": str(grid.store_path),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    atomic_write(out / "table.md", table + "\n\n" + "".join(f"- {v}\n" for v in verdicts))
    atomic_write(out / "demo.json", json.dumps(result, indent=2, default=str) + "\n")
    n_test = study["n_problems"] if study else 0
    lines.say(
        f"[demo] 4/4 results on {n_test} held-out arith problems × {len(config.seeds)} seeds (greedy decoding; "
        f"base before fine-tuning: EM {100 * base_metrics['exact_match']:.1f} %; λ = {config.ce_weight:g}):\n\n"
        f"{table}\n\n" + "\n".join(verdicts) + "\n"
    )
    lines.say(f"[demo] report: {report}; the libraries' output: {out / LOG_NAME}; total {_clock(seconds['total'])}")
    return result
