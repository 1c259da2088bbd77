"""Generate answers greedily for one split and score them (math: exact match, formula IoU/Dice/…, step errors;
QA: choice accuracy plus log-likelihood acc/acc_norm), with 95 % bootstrap confidence intervals.

  segloss eval --run runs/x --split test                        # a `segloss train` run (base model + adapter)
  segloss eval --run runs/x --split validation --limit 50 --batch-size 16
  segloss eval --model ./base-model --dataset gsm8k --data-path ../shared/data/gsm8k --few-shot 4
  segloss eval --model ./instruct-model --dataset gsm8k --data-path ../shared/data/gsm8k --template instruction
  segloss eval --model ./base-model --dataset openbookqa --data-path ../shared/data/openbookqa --limit 100
  segloss eval --model ./base-model --dataset arith --dataset-options '{n_test: 50}' --output-dir runs/eval-arith
  segloss eval --run runs/x --roscoe                            # add ROSCOE scores (pip install "segloss[roscoe]")
  segloss eval --model SmolLM2-135M-Instruct.Q4_1.gguf --dataset gsm8k --data-path ../shared/data/gsm8k --few-shot 4
  segloss eval --model ./gguf-folder --gguf-file model.Q4_1.gguf --dataset arith --template chat --torch-dtype auto
  segloss eval --run runs/x --no-stop-strings                   # generate the whole budget (no cut at stop strings)
  segloss eval --run runs/x --teacher-forced                    # add the authors' teacher-forced accuracy
  segloss eval --run runs/x --split validation --dataset-options '{authors_split: true}'   # the authors' GSM8K split
  segloss eval --run runs/mine --dataset my-test.jsonl --answer-pattern '#### (.+)'   # your own data (docs/data.md)

Generation stops at EOS, the chat end-of-turn token and the dataset's stop strings (math: a new "Question:" or a
blank line; QA: the end of the line) and the text is cut there before scoring. A run is evaluated with the template
it was trained with unless --template says otherwise.

Your own data (a .jsonl/.json/.csv/.parquet file or folder, or a hub id, as --dataset) is scored by exact match of
the completion, or of the answer --answer-pattern extracts, plus the formula metrics when its rows use <<a+b=c>>.

Writes predictions.jsonl (id, prompt, reference, generated, new_tokens, parsed_answer, metrics) and metrics.json
(with mean_new_tokens and n_prompt_truncated) into
<run>/eval/<split>/ (or --output-dir) and prints the summary; with --run, the run's README.md model card gets the
metrics. Metric definitions: docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def parse(argv: Sequence[str], prog: str = "segloss eval") -> Any:
    """The `EvalConfig` of ``argv`` (``--config FILE`` + flags), every value typed like `segloss train`'s;
    ``--help`` is rendered from EvalConfig's source without importing torch (`segloss.helptext`)."""
    from segloss.config import exit_with_help, parse_config, typed_parser

    def parser() -> Any:
        from segloss.evaluation.config import EvalConfig

        return typed_parser(EvalConfig, prog=prog, description=__doc__)

    def text() -> str:
        from segloss.helptext import render_help, source_class

        return render_help(prog, __doc__, source_class("segloss.evaluation.config", "EvalConfig").fields)

    exit_with_help(argv, text, parser)
    from segloss.evaluation.config import EvalConfig

    return parse_config(parser(), EvalConfig, argv)


def run(config: Any) -> int:
    from segloss.evaluation import evaluate

    evaluate(config)
    return 0
