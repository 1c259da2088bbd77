"""Fine-tune a causal LM with a combined segmentation objective (CE on all tokens + a task loss on the answer).

  segloss train --config configs/gsm8k.yaml
  segloss train --config configs/gsm8k.yaml --max_steps 10 --output_dir runs/smoke
  segloss train --model ./my-model --dataset gsm8k --data_path ../shared/data/gsm8k \\
                --loss lovasz --ce_weight 0.6 --output_dir runs/x --max_steps 200
  segloss train --model ./my-model --dataset arith --loss ce=0.5,focal=0.25,lovasz=0.25 --output_dir runs/y
  segloss train --config configs/gsm8k.yaml --eval_strategy no --torch_compile --report_to tensorboard
  segloss train --config runs/x/config.yaml --resume          # continue from the newest complete checkpoint
  segloss train --config runs/x/config.yaml --resume --learning_rate 1e-4 --resume_allow_changes   # recorded
  segloss train --config configs/gsm8k.yaml --print_config    # the resolved settings, as YAML
  torchrun --nproc_per_node 2 -m segloss.cli train --config configs/gsm8k.yaml   # several processes

Training runs TRL's SFTTrainer (segloss.integrations.trl.SeglossSFTTrainer). Settings are segloss's own (model,
dataset, loss, LoRA, …) plus every TRL `SFTConfig` / `transformers.TrainingArguments` field (bf16 stays off unless
--bf16 true), each a YAML key and a flag (flags win; `--max-steps` and `--max_steps` both work). The run directory gets
checkpoint-*/, the final adapter (or model with --full_finetune), the tokenizer, config.yaml and train_summary.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def parse(argv: Sequence[str], prog: str = "segloss train") -> Any:
    """The `TrainConfig` of ``argv``; ``--help`` and ``--print_config`` print and exit like any parser.

    ``--help`` is rendered from the source of the config classes (`segloss.helptext`) without importing torch,
    transformers or TRL.
    """
    from segloss.config import exit_with_help

    exit_with_help(argv, lambda: _help_text(prog), lambda: _parser(prog))
    from segloss.training.config import parse_train_config

    return parse_train_config(argv, _parser(prog))


def _help_text(prog: str) -> str:
    """What ``_parser(prog).format_help()`` prints, read from source: TrainConfig's fields, TrainingArguments' and
    SFTConfig's documentation sections, as `training.config` imports them."""
    from segloss.config import TRAIN_HELP_SECTIONS, train_help_groups
    from segloss.helptext import render_help, source_class

    def read(name: str) -> Any:
        return source_class("segloss.training.config", name)

    config = read("TrainConfig")
    classes = {name: read(name) for name, _ in TRAIN_HELP_SECTIONS}  # each read once: doc and field names
    documented = {name: (cls.doc, cls.names) for name, cls in classes.items()}
    groups = train_help_groups(config.names, read("SeglossArguments").names, documented)
    return render_help(prog, __doc__, config.fields, groups)


def _parser(prog: str) -> Any:
    from segloss.training.config import train_parser

    return train_parser(prog=prog, description=__doc__)


def run(config: Any) -> int:
    from segloss.training import train

    result = train(config)
    if result.summary.get("world_size", 1) == 1 or _is_main():
        print(json.dumps({"output_dir": str(result.output_dir), **result.summary}, indent=2, default=str))
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
