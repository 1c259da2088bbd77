"""The model card of a run folder: ``README.md`` in the format TRL and the Hugging Face hub use.

``write_model_card(run_dir)`` builds the card from what the folder holds — ``config.yaml`` (base model, data,
objective, LoRA), ``train_summary.json`` (steps, tokens, losses) and every ``eval/<split>/metrics.json`` — so the
card is always the folder's own description, and rewriting it is idempotent. ``segloss train`` writes it when the
run ends and ``segloss eval --run`` rewrites it with the metrics (``extra_evals``: a result written outside the
folder with ``--output-dir``). The YAML front matter is huggingface_hub's `ModelCardData`: ``library_name``
(``peft`` for a LoRA adapter, else ``transformers``), ``base_model``, ``datasets`` (hub ids only), ``tags``
(``segloss``, ``generated_from_trainer``, the task losses, and the tags another writer — PEFT's ``save_pretrained``
— put there), ``pipeline_tag`` and, after an evaluation, ``model-index`` with one result per split and metric. The
body says the same in prose and tables. Only the main process writes; the file is replaced atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segloss import __version__
from segloss.fileio import atomic_write, read_json_object
from segloss.rundir import CARD_NAME as CARD_NAME  # re-exported: the name lives in segloss.rundir
from segloss.rundir import RunDir

_LOSS_TITLES = {
    "ce": "cross-entropy",
    "focal": "focal",
    "gdice": "generalized Dice",
    "sadl": "self-adjusting Dice",
    "lovasz": "Lovász-softmax",
    "dice": "Dice",
    "jaccard": "Jaccard",
    "tversky": "Tversky",
    "focal_tversky": "focal Tversky",
}


def _hub_dataset(dataset: str) -> str | None:
    """The hub id of a dataset, for the card's ``datasets`` (a built-in's source, or the user's hub id)."""
    from segloss.data import DATASETS
    from segloss.data.custom import user_source_kind

    if dataset in DATASETS:
        return DATASETS[dataset].hub_id
    try:
        return dataset if user_source_kind(dataset) == "hub" else None
    except (ValueError, FileNotFoundError):  # a file that was moved since: the body still names it
        return None


def _link(name: str, kind: str = "") -> str:
    """A hub link for hub ids (``owner/name``), the name in backticks for local paths."""
    if "/" in name and not Path(name).expanduser().exists() and not name.startswith((".", "/", "~")):
        return f"[{name}](https://huggingface.co/{kind}{name})"
    return f"`{name}`"


def load_evals(run_dir: Path, extra: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The metrics.json of every ``eval/<split>/`` in the run folder, then ``extra`` (by split, newest wins)."""
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for result in [read_json_object(path, required=False) for path in sorted(run_dir.glob("eval/*/metrics.json"))] + [
        dict(e) for e in extra
    ]:
        found[(result.get("dataset"), result.get("split"), result.get("output_dir"))] = result
    return list(found.values())


def _eval_results(name: str, evals: Sequence[Mapping[str, Any]]) -> list[Any]:
    from huggingface_hub import EvalResult

    results = []
    for result in evals:
        dataset = str(result.get("dataset"))
        for metric, summary in result.get("metrics", {}).items():
            mean = summary.get("mean")
            if mean is None or not math.isfinite(mean):
                continue
            results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=_hub_dataset(dataset) or dataset,
                    dataset_name=dataset,
                    dataset_split=str(result.get("split")),
                    metric_type=metric,
                    metric_value=round(float(mean), 4),
                )
            )
    return results


def model_card(
    run_dir: str | Path, extra_evals: Sequence[Mapping[str, Any]] = (), existing_tags: Sequence[str] = ()
) -> Any:
    """The `huggingface_hub.ModelCard` of ``run_dir`` (see the module docstring); nothing is written."""
    from huggingface_hub import ModelCard, ModelCardData

    from segloss.losses.spec import LossSpec

    run = RunDir(run_dir)
    run_dir = run.path
    config = run.config_values()  # what the card shows, as written (a model card is no place to re-validate)
    summary = run.summary() or {}
    evals = load_evals(run_dir, extra_evals)
    spec = LossSpec.parse(
        config.get("loss", "ce"), ce_weight=config.get("ce_weight"), options=config.get("loss_options")
    )
    lora = not config.get("full_finetune", False)
    name = run_dir.resolve().name
    dataset, base = str(config.get("dataset", "")), str(config.get("model", ""))
    tags = ["segloss", "generated_from_trainer", *(n for n in spec.weights if n != "ce"), *(["lora"] if lora else [])]
    data = ModelCardData(
        base_model=base or None,
        datasets=[hub] if (hub := _hub_dataset(dataset)) else None,
        library_name="peft" if lora else "transformers",
        model_name=name,
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*tags, *existing_tags])),
        eval_results=_eval_results(name, evals) or None,
    )
    body = _body(name, config, summary, evals, spec, lora, run_dir)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_model_card(run_dir: str | Path, extra_evals: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Write (or rewrite) ``run_dir/README.md``; tags another writer put in an existing card are kept."""
    from huggingface_hub import ModelCard

    path = RunDir(run_dir).card_path
    existing: list[str] = []
    if path.is_file():
        try:
            existing = list(ModelCard.load(path).data.tags or [])
        except Exception:  # an unreadable card is replaced, not a reason to fail the run
            existing = []
    atomic_write(path, str(model_card(run_dir, extra_evals, existing)))
    return path


# -------------------------------------------------------------------------------------------------- the body
def _objective(spec: Any) -> str:
    terms = " + ".join(
        f"{weight:g}·{'CE(all target tokens)' if n == 'ce' else f'{_LOSS_TITLES.get(n, n)}(answer tokens)'}"
        for n, weight in spec.weights.items()
    )
    rows = [
        f"| {n} | {_LOSS_TITLES.get(n, n)} | {w:g} | {json.dumps(dict(spec.options.get(n, {}))) or '{}'} |"
        for n, w in spec.weights.items()
    ]
    return "\n".join(
        [
            f"L = {terms}",
            "",
            "| loss | name | weight | options |",
            "|---|---|---|---|",
            *rows,
        ]
    )


def _training_table(config: Mapping[str, Any], summary: Mapping[str, Any], lora: bool) -> str:
    settings: list[tuple[str, Any]] = [
        ("dataset", f"`{config.get('dataset')}`"),
        ("data path", config.get("data_path")),
        ("dataset options", config.get("dataset_options") or None),
        ("split", config.get("train_split", "train")),
        ("training examples", summary.get("train_examples")),
        ("template", config.get("template", "plain")),
        ("max length", config.get("max_length")),
        (
            "method",
            f"LoRA r={config.get('lora_r', 8)}, alpha={config.get('lora_alpha', 16)}" if lora else "full fine-tuning",
        ),
        ("learning rate", config.get("learning_rate")),
        ("batch size per device", config.get("per_device_train_batch_size")),
        ("seed", config.get("seed", 42)),
        ("steps", summary.get("steps")),
        ("epochs", _round(summary.get("epochs"))),
        ("tokens", summary.get("tokens")),
        ("mean training loss", _round(summary.get("train_loss"))),
        ("wall time (s)", _round(summary.get("wall_time_s"), 1)),
    ]
    rows = [f"| {key} | {value} |" for key, value in settings if value is not None]
    return "\n".join(["| setting | value |", "|---|---|", *rows])


def _round(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else value


def _evaluation(evals: Sequence[Mapping[str, Any]]) -> str:
    if not evals:
        return "Not evaluated yet: `segloss eval --run <this folder>` adds the metrics here."
    parts = []
    for result in evals:
        rows = [
            f"| {metric} | {s['mean']:.4f} | [{s['ci_low']:.4f}, {s['ci_high']:.4f}] | {s['n']} |"
            for metric, s in result.get("metrics", {}).items()
            if s.get("mean") is not None and math.isfinite(s["mean"])
        ]
        parts += [
            f"`{result.get('dataset')}`, split `{result.get('split')}`: {result.get('n_examples')} examples, "
            f"template `{result.get('template')}`, greedy generation (`segloss eval`), 95 % bootstrap intervals.",
            "",
            "| metric | mean | 95% CI | n |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    return "\n".join(parts).rstrip()


def _body(
    name: str,
    config: Mapping[str, Any],
    summary: Mapping[str, Any],
    evals: Sequence[Mapping[str, Any]],
    spec: Any,
    lora: bool,
    run_dir: Path,
) -> str:
    import torch
    import transformers

    base, dataset = str(config.get("model", "")), str(config.get("dataset", ""))
    what = "a LoRA adapter for" if lora else "a fine-tuned version of"
    hub = _hub_dataset(dataset)
    data = _link(hub, "datasets/") if hub else f"`{dataset}`"
    versions = [
        f"- segloss: {summary.get('segloss_version', __version__)}",
        f"- Transformers: {transformers.__version__}",
        f"- PyTorch: {torch.__version__}",
    ]
    if lora:
        import peft

        versions.append(f"- PEFT: {peft.__version__}")
    load = "AutoPeftModelForCausalLM" if lora else "AutoModelForCausalLM"
    package = "peft" if lora else "transformers"
    return "\n".join(
        [
            f"# Model Card for {name}",
            "",
            f"This model is {what} {_link(base)}, trained on {data} with segloss, which combines cross-entropy "
            "with a segmentation loss on the answer tokens.",
            "",
            "## Objective",
            "",
            _objective(spec),
            "",
            "## Training",
            "",
            _training_table(config, summary, lora),
            "",
            "## Evaluation",
            "",
            _evaluation(evals),
            "",
            "## Quick start",
            "",
            "```python",
            f"from {package} import {load}",
            "from transformers import AutoTokenizer",
            "",
            f'model = {load}.from_pretrained("{run_dir}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{run_dir}")',
            "```",
            "",
            f"or `segloss eval --run {run_dir} --split test`.",
            "",
            "### Framework versions",
            "",
            *versions,
            "",
        ]
    )
