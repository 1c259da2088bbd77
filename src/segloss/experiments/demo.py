"""The embedded default: the whole method on a laptop CPU in minutes, with no network (``segloss demo``).

1. generate the synthetic ``arith`` dataset (:mod:`segloss.data.arith`; one seed draws disjoint train/test splits);
2. train a BPE tokenizer and pretrain a tiny Llama on the train split with plain CE
   (:func:`segloss.experiments.pretrain.pretrain_base_model`, cached under the user cache dir and reused);
3. fine-tune that base with LoRA once per loss (CE alone, CE+Lovász by default; ``losses="all"`` for the five),
   same seed, data and budget, on the first ``n_finetune`` train problems — which pretraining left out;
4. evaluate each on the held-out test split (greedy decoding), print the table (EM, IoU, missing/extra steps,
   train time) with CE as the baseline and each loss's relative EM change, and write the report with plots.

Steps 3–4 are a one-seed grid (:func:`segloss.experiments.grid.run_grid`) and the report is the grid's
(:func:`segloss.experiments.report.write_report`), so the demo's numbers go through exactly the code of the paper
grids. Everything is seeded: the same seed gives the same table. ``smoke=True`` shrinks every size (≤ 60 s; tests).

    from segloss.experiments.demo import DemoConfig, run_demo
    result = run_demo(DemoConfig(losses="all"))
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
DEFAULT_LOSSES = ("ce", "lovasz")
DEMO_DATASET = "arith"
TABLE_METRICS = (
    ("exact_match", "EM %", 100.0),
    ("iou", "IoU %", 100.0),
    ("missing_steps", "Missing", 1.0),
    ("extra_steps", "Extra", 1.0),
)


class DemoFailed(RuntimeError):
    """A fine-tune or evaluation of the demo failed (the others ran; the store has the error)."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """Every size of one demo flavour (full or smoke): data, base model, fine-tuning and evaluation."""

    arith: dict[str, Any]  # arith builder options (difficulty knobs and split sizes)
    n_finetune: int  # first train problems: LoRA fine-tuning data; the rest of the train split pretrains the base
    pretrain: dict[str, Any]  # PretrainConfig fields
    train: dict[str, Any]  # TrainConfig fields shared by every loss
    eval: dict[str, Any]  # EvalConfig fields


# Tuned by measurement on the 2-core CPU machine (see docs/demo.md): the base learns the arithmetic in pretraining,
# and CE+LoRA lands between 20 % and 80 % exact match, leaving room for the losses to differ both ways.
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
    n_finetune=800,
    pretrain={
        "vocab_size": 768,
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "max_length": 160,
        "max_steps": 2000,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "warmup_steps": 50,
    },
    train={
        "max_steps": 100,
        "per_device_train_batch_size": 16,
        "learning_rate": 2e-3,
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
        "a comma-separated string, or `all` for ce, focal, gdice, sadl, lovasz.",
    )
    ce_weight: float = config_field(0.6, help="CE weight combined with each task loss (the task loss gets the rest).")
    seed: int = config_field(0, help="Seed of the data, the base model, LoRA and the data order.")
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
        for name in ("pretrain_steps", "finetune_steps", "n_test"):
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
        return dataclasses.replace(base, arith=arith, pretrain=pretrain, train=train)


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
        dataset_options=dict(preset.arith),
        data_seed=config.seed,
        skip_examples=preset.n_finetune,
        seed=config.seed,
        cache_dir=config.cache_dir,
        **preset.pretrain,
    )


def grid_config(config: DemoConfig, base_model: Path) -> Any:
    """The demo's steps 3–4 as a one-model, one-dataset, one-seed grid."""
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
        seeds=[config.seed],
        train=train,
        eval=evaluation,
        output_dir=str(out),
        store=str(out / "results.sqlite"),
    )


def _start_over(out: Path) -> None:
    """Remove what an earlier demo wrote into ``out`` (only the demo's own files)."""
    for name in ("runs", "report"):
        shutil.rmtree(out / name, ignore_errors=True)
    for path in [*out.glob("results.sqlite*"), out / "demo.json", out / "table.md"]:
        path.unlink(missing_ok=True)


def run_demo(config: DemoConfig, *, log: Any = print) -> dict[str, Any]:
    """Run the demo; returns ``{"rows", "table", "base_model", "pretrain", "report", "store", "seconds", …}``.

    ``rows`` has one dict per loss (CE first): ``loss``, the metric means, ``train_seconds`` and
    ``relative_em_change`` (vs CE; None for CE or when CE's EM is 0). Also writes ``table.md`` and ``demo.json``
    into ``output_dir`` and the report (``report/report.md`` + PNGs). A failed fine-tune or evaluation raises
    :class:`DemoFailed` with the cell's error, after the other cells ran.
    """
    from segloss.data import load_examples
    from segloss.experiments.grid import run_grid
    from segloss.experiments.report import write_report
    from segloss.experiments.store import ResultStore

    say = log or (lambda _msg: None)
    started = time.perf_counter()
    out = Path(config.output_dir)
    if not config.resume:
        _start_over(out)
    out.mkdir(parents=True, exist_ok=True)
    preset = config.preset
    seconds: dict[str, float] = {}

    tick = time.perf_counter()
    test = load_examples(DEMO_DATASET, "test", seed=config.seed, **preset.arith)
    say(
        f"[demo] 1/4 arith (seed {config.seed}): {preset.arith['n_train']} train problems "
        f"({preset.n_finetune} for fine-tuning, the rest pretrain the base), {len(test)} held-out test problems"
    )
    seconds["data"] = time.perf_counter() - tick

    tick = time.perf_counter()
    pre = pretrain_config(config)
    cached = is_complete(base_model_dir(pre))
    base = pretrain_base_model(pre)
    pretrain_summary = json.loads((base / MARKER).read_text())
    say(
        f"[demo] 2/4 base model {base} ({'reused from the cache' if cached else 'pretrained'}, "
        f"{pretrain_summary['n_parameters']:,} parameters, final CE {pretrain_summary['final_train_loss']:.3f})"
    )
    seconds["pretrain"] = time.perf_counter() - tick

    tick = time.perf_counter()
    grid = grid_config(config, base)
    say(f"[demo] 3/4 fine-tuning with LoRA and evaluating, once per loss: {', '.join(config.losses)}")
    summary = run_grid(grid, log=say)
    seconds["finetune_and_eval"] = time.perf_counter() - tick

    with ResultStore(grid.store_path, create=False) as store:
        cells = store.rows()
    rows = table_rows(cells, list(config.losses))
    table = format_table(rows, ce_weight=config.ce_weight)
    report = write_report(grid.store_path, out / "report", seed=config.seed) if rows else None
    seconds["total"] = time.perf_counter() - started
    result = {
        "config": config_to_dict(config),
        "base_model": str(base),
        "base_cached": cached,
        "pretrain": {k: v for k, v in pretrain_summary.items() if k != "log_history"},
        "n_test": len(test),
        "rows": rows,
        "table": table,
        "report": str(report) if report else None,
        "store": str(grid.store_path),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    atomic_write(out / "table.md", table + "\n")
    atomic_write(out / "demo.json", json.dumps(result, indent=2, default=str) + "\n")
    say(f"[demo] 4/4 results on {len(test)} held-out arith problems (greedy decoding):\n\n{table}\n")
    say(f"[demo] report: {report}; total {seconds['total']:.0f} s")
    failed = [c for c in cells if c["status"] == "failed"]
    if summary.failed or failed:
        errors = "; ".join(f"{c['loss']}: {str(c.get('error') or '').strip().splitlines()[-1:]}" for c in failed)
        raise DemoFailed(f"demo: {len(failed)} fine-tune/eval cell(s) failed ({errors}); see {grid.store_path}")
    return result


def table_rows(cells: list[dict[str, Any]], losses: list[str]) -> list[dict[str, Any]]:
    """One row per done loss, in ``losses`` order, with the relative EM change vs CE."""
    from segloss.experiments.grid import loss_label

    by_loss = {c["loss"]: c for c in cells if c["status"] == "done"}
    rows = []
    for name in losses:
        cell = by_loss.get(loss_label(name))
        if cell is None:
            continue
        metrics = cell["metrics"] or {}
        row: dict[str, Any] = {
            "loss": name,
            **{m: metrics.get(m) for m, _, _ in TABLE_METRICS},
            "train_seconds": metrics.get("train_seconds"),
            "eval_seconds": metrics.get("eval_seconds"),
            "exact_match_ci": _em_ci(cell.get("eval_dir")),
        }
        rows.append(row)
    ce = next((r for r in rows if r["loss"] == "ce"), None)
    for row in rows:
        base = ce["exact_match"] if ce else None
        row["relative_em_change"] = (
            None
            if row["loss"] == "ce" or not base or row["exact_match"] is None
            else (row["exact_match"] - base) / base
        )
    return rows


def _em_ci(eval_dir: str | None) -> tuple[float, float] | None:
    """The 95 % bootstrap CI of EM over the test problems, from the cell's metrics.json (None when absent)."""
    path = Path(eval_dir) / "metrics.json" if eval_dir else None
    if path is None or not path.is_file():
        return None
    em = json.loads(path.read_text()).get("metrics", {}).get("exact_match") or {}
    return (em["ci_low"], em["ci_high"]) if em.get("ci_low") is not None else None


def _cell(value: float | None, scale: float) -> str:
    return "–" if value is None else f"{value * scale:.1f}" if scale != 1.0 else f"{value:.2f}"


def format_table(rows: list[dict[str, Any]], *, ce_weight: float) -> str:
    """A Markdown table: one row per loss, CE first as the baseline, EM with its 95 % bootstrap CI over the test
    problems, and the EM change relative to CE."""
    header = ["Loss", *(label for _, label, _ in TABLE_METRICS), "EM 95 % CI", "EM vs CE", "Train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        name = "CE (baseline)" if row["loss"] == "ce" else f"{ce_weight:g} CE + {1 - ce_weight:g} {row['loss']}"
        change = row["relative_em_change"]
        rel = "—" if row["loss"] == "ce" else ("n/a" if change is None else f"{change * 100:+.1f} %")
        train = "–" if row["train_seconds"] is None else f"{row['train_seconds']:.0f}"
        ci = row.get("exact_match_ci")
        em_ci = "–" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        cells = [name, *(_cell(row[m], scale) for m, _, scale in TABLE_METRICS), em_ci, rel, train]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
