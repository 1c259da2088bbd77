"""Generate answers greedily for one split and score them (math: exact match, formula IoU/Dice/…, step errors;
QA: choice accuracy plus log-likelihood acc/acc_norm), with 95 % bootstrap confidence intervals.

  segloss eval --run runs/x --split test                        # a `segloss train` run (base model + adapter)
  segloss eval --run runs/x --split validation --limit 50 --batch-size 16
  segloss eval --model ./base-model --dataset gsm8k --data-path ../shared/data/gsm8k --few-shot 4
  segloss eval --model ./instruct-model --dataset gsm8k --data-path ../shared/data/gsm8k --template instruction
  segloss eval --model ./base-model --dataset openbookqa --data-path ../shared/data/openbookqa --limit 100
  segloss eval --model ./base-model --dataset arith --dataset-options '{n_test: 50}' --output-dir runs/eval-arith
  segloss eval --run runs/x --roscoe                            # add ROSCOE scores (pip install "segloss[roscoe]")
  segloss eval --run runs/x --teacher-forced                    # add the authors' teacher-forced accuracy
  segloss eval --run runs/x --split validation --dataset-options '{authors_split: true}'   # the authors' GSM8K split

Writes predictions.jsonl (id, prompt, reference, generated, parsed_answer, metrics) and metrics.json into
<run>/eval/<split>/ (or --output-dir) and prints the summary. Metric definitions: docs/metrics.md.
"""

from __future__ import annotations

import argparse

from segloss.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from segloss.evaluation.config import EvalConfig

    add_config_arguments(parser, EvalConfig)


def run(args: argparse.Namespace) -> int:
    from segloss.evaluation import EvalConfig, evaluate

    evaluate(config_from_args(EvalConfig, args))
    return 0
