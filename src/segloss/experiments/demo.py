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

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from segloss.config import config_field, config_to_dict
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
    ce_weight: float = config_field(0.6, help="CE weight combined with each task loss (the task loss gets the rest).")
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
    pretrain_steps: int | None = config_field(None, help="Override the preset's pretraining steps.")
    finetune_steps: int | None = config_field(None, help="Override the preset's LoRA fine-tuning steps per loss.")
    n_test: int | None = config_field(None, help="Override the number of held-out test problems.")

    def __post_init__(self) -> None:
        self.losses = resolve_losses(self.losses)
        if not 0.0 <= self.ce_weight < 1.0:
            raise ValueError(f"ce_weight must be in [0, 1) so that the task loss has a weight, got {self.ce_weight}")
        for name in ("pretrain_steps", "finetune_steps", "n_test", "n_seeds"):
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
        "disable_tqdm": config.smoke,
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
    for name in ("runs", "report"):
        shutil.rmtree(out / name, ignore_errors=True)
    shutil.rmtree(out / "base_eval", ignore_errors=True)
    for path in [*out.glob("results.sqlite*"), out / "demo.json", out / "table.md"]:
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


def run_demo(config: DemoConfig, *, log: Any = print) -> dict[str, Any]:
    """Run the demo; returns ``{"summary", "table", "verdicts", "base", "base_model", "report", "seconds", …}``.

    ``summary`` is the report's ``summary.json`` (per loss: ``n_seeds``, ``em_mean``, ``em_ci``,
    ``rel_change_vs_ce``, ``rel_change_ci``, ``p_value`` (Holm-adjusted), ``verdict``, IoU, step errors, train
    seconds and tokens); ``base`` the base model's metrics before fine-tuning. Also writes ``table.md`` and
    ``demo.json`` into ``output_dir`` and the report (``report/``). A failed fine-tune or evaluation raises
    :class:`DemoFailed` with the cell's error, after the other cells ran. ``base_only`` stops after step 2.
    """
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    out = Path(config.output_dir)
    if config.base_only:
        base, _, _ = _base_model(config, say)
        print(base)
        return {"base_model": str(base)}
    if not config.resume:
        _start_over(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    base, cached, pretrain_summary = _base_model(config, say)
    seconds["data_and_pretrain"] = time.perf_counter() - tick
    tick = time.perf_counter()
    base_metrics = evaluate_base(config, base)
    seconds["base_eval"] = time.perf_counter() - tick
    say(
        f"[demo] 2/4 the base before fine-tuning, on the target format: EM {100 * base_metrics['exact_match']:.1f} %, "
        f"well-formed {100 * base_metrics.get('well_formed', 0.0):.1f} %"
    )
    tick = time.perf_counter()
    grid = grid_config(config, base)
    say(
        f"[demo] 3/4 LoRA fine-tuning into the formula format and evaluating: losses {', '.join(config.losses)} "
        f"× seeds {config.seeds}"
    )
    summary = _run_cells(grid, say)
    seconds["finetune_and_eval"] = time.perf_counter() - tick
    result = _finish(config, grid, base, cached, pretrain_summary, base_metrics, seconds, started, say)
    if summary.failed:
        raise DemoFailed(f"demo: {len(summary.failed)} fine-tune/eval cell(s) failed; see {grid.store_path}")
    return result


def _base_model(config: DemoConfig, say: Any) -> tuple[Path, bool, dict[str, Any]]:
    from segloss.data import load_examples

    preset = config.preset
    test = load_examples(DEMO_DATASET, "test", seed=config.seed, **preset.arith)
    say(
        f"[demo] 1/4 arith (seed {config.seed}): {preset.arith['n_train']} train problems "
        f"({preset.n_finetune} for fine-tuning, the rest pretrain the base in the {preset.pretrain_format!r} "
        f"format), {len(test)} held-out test problems"
    )
    pre = pretrain_config(config)
    cached = is_complete(base_model_dir(pre))
    base = pretrain_base_model(pre)
    pretrain_summary = json.loads((base / MARKER).read_text())
    say(
        f"[demo] 2/4 base model {base} ({'reused from the cache' if cached else 'pretrained'}, "
        f"{pretrain_summary['n_parameters']:,} parameters, final CE {pretrain_summary['final_train_loss']:.3f})"
    )
    return base, cached, pretrain_summary


def _run_cells(grid: Any, say: Any) -> Any:
    from segloss.experiments.grid import run_grid

    return run_grid(grid, log=say)


def _finish(
    config: DemoConfig,
    grid: Any,
    base: Path,
    cached: bool,
    pretrain_summary: dict[str, Any],
    base_metrics: dict[str, float],
    seconds: dict[str, float],
    started: float,
    say: Any,
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
    say(
        f"[demo] 4/4 results on {n_test} held-out arith problems × {len(config.seeds)} seeds (greedy decoding; "
        f"base before fine-tuning: EM {100 * base_metrics['exact_match']:.1f} %; λ = {config.ce_weight:g}):\n\n"
        f"{table}\n\n" + "\n".join(verdicts) + "\n"
    )
    say(f"[demo] report: {report}; total {seconds['total']:.0f} s")
    return result
