"""`evaluate(config)`: generate answers for a split, score them, write predictions.jsonl and metrics.json."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from segloss.config import config_to_dict
from segloss.data import MAX_NEW_TOKENS, Example, is_multiple_choice, is_user_data, load_examples, stop_strings
from segloss.data.templates import effective_template
from segloss.evaluation.config import EvalConfig
from segloss.evaluation.generation import (
    Generated,
    GenerateFn,
    cut_at_stop,
    load_baseline,
    make_generate_fn,
    prepare_tokenizer,
)
from segloss.evaluation.prompts import build_prompt, choose_shots
from segloss.evaluation.teacher_forced import teacher_forced_rows
from segloss.evaluation.user_data import UserDataScorer
from segloss.fileio import write_pair
from segloss.metrics.formulas import parse_final_answer, score_math
from segloss.metrics.qa import loglikelihood_choice_scores, parse_choice_letter, score_choice
from segloss.metrics.stats import summarize
from segloss.rundir import CONFIG_NAME, RunDir

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
_CHOICE_LINE = re.compile(r"^\s*\(?[A-Z][.)]\s.*$\n?", re.MULTILINE)


@dataclass
class Setup:
    """Everything `evaluate` resolves from the config (and, in run mode, the run's config.yaml)."""

    dataset: str
    data_path: str | None
    dataset_options: dict[str, Any]
    data_seed: int
    max_length: int | None
    output_dir: Path
    template: str = "plain"
    train_config: Any = None  # run mode: the run's TrainConfig


def check_run_dir(run: str | Path) -> Path:
    """A `segloss train` run directory with its config.yaml and an adapter (or full model); else a clear error."""
    run_dir = RunDir(run)
    if not run_dir.path.is_dir():
        raise FileNotFoundError(
            f"run: {run_dir.path} is not a directory; pass --run with a `segloss train` output_dir"
        )
    if not run_dir.config_path.is_file():
        raise FileNotFoundError(
            f"run: {run_dir.path} has no {CONFIG_NAME}; is it a finished `segloss train` run? "
            "Point --run at the run's output_dir (or a checkpoint-* folder in it)"
        )
    if not run_dir.has_model():
        raise FileNotFoundError(
            f"run: {run_dir.path} has no adapter (adapter_config.json) or model (config.json); the "
            "run did not finish saving — evaluate one of its checkpoint-* folders instead"
        )
    return run_dir.path


def resolve(config: EvalConfig) -> Setup:
    if config.run is not None:
        run_dir = RunDir(check_run_dir(config.run))
        train = run_dir.config()  # the typed TrainConfig the run trained with
        dataset = config.dataset or train.dataset
        same = dataset == train.dataset
        options = (
            config.dataset_options if config.dataset_options is not None else (train.dataset_options if same else {})
        )
        return Setup(
            dataset,
            config.data_path or (train.data_path if same else None),
            dict(options),
            train.seed if same else config.seed,
            config.max_length or train.max_length,
            Path(config.output_dir) if config.output_dir else run_dir.eval_dir(config.split),
            config.template or train.template,
            train,
        )
    assert config.model is not None and config.dataset is not None  # checked in EvalConfig.__post_init__
    name = Path(config.model).name or config.model.replace("/", "_")
    out = (
        Path(config.output_dir)
        if config.output_dir
        else (
            Path("runs")
            / "baselines"
            / f"{name}-{config.dataset}-{config.few_shot}shot-{config.template or 'plain'}"
            / config.split
        )
    )
    return Setup(
        config.dataset,
        config.data_path,
        dict(config.dataset_options or {}),
        config.seed,
        config.max_length,
        out,
        config.template or "plain",
    )


def load_model(config: EvalConfig) -> tuple[Any, Any]:
    """The run's model (base loaded as it was trained, GGUF included) or the baseline, and its tokenizer."""
    if config.run is not None:
        from segloss.evaluation.generation import resolve_device
        from segloss.training import load_trained

        model, tokenizer, _ = load_trained(config.run, dtype=config.torch_dtype)
        if hasattr(model, "merge_and_unload"):  # a LoRA run: one weight per layer makes generation faster
            model = model.merge_and_unload()
        model = model.to(resolve_device(config.device)).eval()
    else:
        model, tokenizer = load_baseline(
            config.model or "", dtype=config.torch_dtype, device=config.device, gguf_file=config.gguf_file
        )
    return model, prepare_tokenizer(tokenizer)


def generate_all(
    generate_fn: GenerateFn, prompts: Sequence[str], batch_size: int, max_new_tokens: int
) -> list[Generated | str]:
    """Run ``generate_fn`` over ``prompts`` in batches, with a progress bar (ETA) on a terminal (none in a log)."""
    texts: list[Generated | str] = []
    with tqdm(total=len(prompts), desc="generating", unit="ex", disable=None) as bar:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            out = generate_fn(batch, max_new_tokens)
            if len(out) != len(batch):
                raise RuntimeError(f"generation returned {len(out)} texts for {len(batch)} prompts")
            texts.extend(out)
            bar.update(len(batch))
    return texts


def score_example(
    example: Example, generated: str, multiple_choice: bool, user_data: UserDataScorer | None = None
) -> tuple[str | None, dict[str, float]]:
    """(parsed answer, per-example metrics) of one generation; ``user_data`` scores the user's own data."""
    if user_data is not None:
        return user_data.answer(generated), user_data.score(generated, example.answer)
    if multiple_choice:
        n = max(len(example.choices), 4)
        return parse_choice_letter(generated, n), score_choice(generated, example.answer, n)
    return parse_final_answer(generated), score_math(generated, example.answer)


def loglikelihood_context(prompt: str) -> str:
    """The prompt without its lettered choice lines (``A. …``), as lm-evaluation-harness poses these sets: the
    choices are scored as continuations of the question, not picked by letter."""
    return _CHOICE_LINE.sub("", prompt).rstrip()


def loglikelihood_rows(model: Any, tokenizer: Any, examples: Sequence[Example], template: str) -> list[dict]:
    """acc/acc_norm per example: each choice scored as a continuation of the (templated) question."""
    rows = []
    for ex in tqdm(examples, desc="log-likelihood", unit="ex", disable=None):  # no bar in a log
        if not ex.choices or ex.label is None:
            rows.append({"acc": math.nan, "acc_norm": math.nan})
            continue
        context = loglikelihood_context(build_prompt(ex, [], template, tokenizer))
        acc, acc_norm = loglikelihood_choice_scores(model, tokenizer, context, [" " + c for c in ex.choices])
        rows.append({"acc": float(acc == ex.label), "acc_norm": float(acc_norm == ex.label)})
    return rows


def roscoe_rows(config: EvalConfig, examples: Sequence[Example], generated: Sequence[str]) -> list[dict]:
    from segloss.metrics.roscoe import load_embedder, score_batch

    embedder = load_embedder(config.roscoe_model)
    # The source is the problem itself: the trailing "Answer:" cue of the prompt is not a source sentence.
    sources = [ex.prompt.rstrip().removesuffix("Answer:").rstrip() for ex in examples]
    return score_batch(list(generated), sources, [ex.answer for ex in examples], embedder=embedder)


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def print_summary(result: dict[str, Any]) -> None:
    print(f"{result['dataset']}/{result['split']}: {result['n_examples']} examples -> {result['output_dir']}")
    if result.get("mean_new_tokens") is not None:
        print(f"  mean new tokens {result['mean_new_tokens']:.1f} of {result['max_new_tokens']}")
    if result.get("n_prompt_truncated"):
        print(f"  {result['n_prompt_truncated']} prompts were longer than max_length and lost their beginning")
    for name, s in result["metrics"].items():
        if s["n"]:
            print(f"  {name:<32} {s['mean']:.4f}  [{s['ci_low']:.4f}, {s['ci_high']:.4f}]  n={s['n']}")


def evaluate(config: EvalConfig, *, generate_fn: GenerateFn | None = None) -> dict[str, Any]:
    """Evaluate a run or a baseline on one split; returns what metrics.json holds.

    The result has ``metrics`` (``{name: {"mean", "ci_low", "ci_high", "n"}}``, 95 % bootstrap CIs seeded with
    ``config.seed``), ``n_examples``, ``dataset``, ``split``, ``output_dir``, ``seconds``, ``mean_new_tokens`` (None
    when ``generate_fn`` returns bare strings), ``n_prompt_truncated``, ``stop_strings`` and the ``config``. Generated
    texts are cut at the dataset's stop strings before scoring (unless ``--no-stop-strings``).
    ``generate_fn(prompts, max_new_tokens) -> texts`` replaces the model's greedy generation (tests); the model is then
    loaded only when log-likelihood scoring or the chat template needs it.
    """
    start = time.time()
    setup = resolve(config)
    examples, shots = _load_split(config, setup)
    setup.template = effective_template(examples, setup.template)  # conversation rows: the chat template
    multiple_choice = is_multiple_choice(setup.dataset)
    user_data = _user_data_scorer(config, setup, examples)
    max_new_tokens = config.max_new_tokens or MAX_NEW_TOKENS.get(setup.dataset, 256)
    stops = stop_strings(setup.dataset) if config.stop_strings else ()
    model = tokenizer = None
    teacher_forced = config.teacher_forced and not multiple_choice
    if generate_fn is None or (multiple_choice and config.loglikelihood) or teacher_forced or setup.template == "chat":
        model, tokenizer = load_model(config)
    prompts = [build_prompt(ex, shots, setup.template, tokenizer) for ex in examples]
    if generate_fn is None:
        generate_fn = make_generate_fn(
            model,
            tokenizer,
            max_length=setup.max_length,
            stop_strings=stops,
            add_special_tokens=setup.template != "chat",
        )
    outputs = generate_all(generate_fn, prompts, config.batch_size, max_new_tokens)
    generated = [cut_at_stop(o.text if isinstance(o, Generated) else o, stops) for o in outputs]
    new_tokens = [o.new_tokens if isinstance(o, Generated) else None for o in outputs]
    scored = [
        score_example(ex, text, multiple_choice, user_data) for ex, text in zip(examples, generated, strict=True)
    ]
    rows = [dict(metrics) for _, metrics in scored]
    if multiple_choice and config.loglikelihood:
        for row, extra in zip(rows, loglikelihood_rows(model, tokenizer, examples, setup.template), strict=True):
            row.update(extra)
    if teacher_forced:
        # The generation prompt dropped the dataset prompt's trailing space; give it back so the answer is separated.
        posed = [
            replace(ex, prompt=prompt + ex.prompt[len(ex.prompt.rstrip(" ")) :])
            for ex, prompt in zip(examples, prompts, strict=True)
        ]
        tf = teacher_forced_rows(
            model, tokenizer, posed, max_length=setup.max_length or 1024, batch_size=config.batch_size
        )
        for row, extra in zip(rows, tf, strict=True):
            row.update(extra)
    if config.roscoe:
        for row, extra in zip(rows, roscoe_rows(config, examples, generated), strict=True):
            row.update(extra)
    predictions = [
        {
            "id": ex.id,
            "prompt": prompt,
            "reference": ex.answer,
            "generated": text,
            "new_tokens": n,
            "parsed_answer": parsed,
            "metrics": {k: _json_value(v) for k, v in row.items()},
        }
        for ex, prompt, text, n, (parsed, _), row in zip(
            examples, prompts, generated, new_tokens, scored, rows, strict=True
        )
    ]
    counted = [n for n in new_tokens if n is not None]
    result: dict[str, Any] = {
        "dataset": setup.dataset,
        "split": config.split,
        "n_examples": len(examples),
        "mode": "run" if config.run else "baseline",
        "template": setup.template,
        "max_new_tokens": max_new_tokens,
        "stop_strings": list(stops),
        "mean_new_tokens": round(sum(counted) / len(counted), 3) if counted else None,
        "n_prompt_truncated": getattr(generate_fn, "n_truncated", None),
        "output_dir": str(setup.output_dir),
        "seconds": round(time.time() - start, 3),
        "metrics": summarize(rows, seed=config.seed),
        "config": config_to_dict(config),
    }
    _write_outputs(setup.output_dir, predictions, result)
    if config.run is not None:  # the run's model card lists its metrics
        from segloss.card import write_model_card

        write_model_card(config.run, extra_evals=[result])
    print_summary(result)
    return result


def _user_data_scorer(config: EvalConfig, setup: Setup, examples: Sequence[Example]) -> UserDataScorer | None:
    """The scorer of the user's own data (None for a built-in dataset, which has its own metrics)."""
    if not is_user_data(setup.dataset):
        if config.answer_pattern:
            raise ValueError(
                f"answer_pattern: only for your own data; {setup.dataset} is scored by its own metrics (drop it)"
            )
        return None
    if config.run is not None and not config.dataset and Path(setup.dataset).is_file():
        print(
            f"[eval] note: evaluating on the run's training file {setup.dataset} (one file is every split); "
            "pass --dataset FILE with held-out rows to measure generalisation"
        )
    return UserDataScorer.for_examples(examples, config.answer_pattern or None)


def _load_split(config: EvalConfig, setup: Setup) -> tuple[list[Example], list[Example]]:
    """The examples to evaluate and the few-shot demonstrations (seeded choice from the training split)."""
    load = dict(path=setup.data_path, seed=setup.data_seed, **setup.dataset_options)
    examples = load_examples(setup.dataset, config.split, limit=config.limit, **load)
    if not examples:
        raise ValueError(f"split: {setup.dataset}/{config.split} has no examples; check --split and --data-path")
    shots = (
        choose_shots(load_examples(setup.dataset, "train", **load), config.few_shot, config.seed)
        if config.few_shot
        else []
    )
    return examples, shots


def _write_outputs(output_dir: Path, predictions: list[dict[str, Any]], result: dict[str, Any]) -> None:
    serializable = {
        **result,
        "metrics": {k: {n: _json_value(v) for n, v in s.items()} for k, s in result["metrics"].items()},
    }
    write_pair(  # metrics.json present <=> it belongs to the predictions.jsonl beside it
        output_dir / PREDICTIONS,
        "".join(json.dumps(p) + "\n" for p in predictions),
        output_dir / METRICS,
        json.dumps(serializable, indent=2) + "\n",
    )
