"""Fine-tune a causal LM with a combined segmentation objective (CE on all tokens + a task loss on the answer).

  segloss train --config configs/gsm8k.yaml
  segloss train --config configs/gsm8k.yaml --max-steps 10 --output-dir runs/smoke
  segloss train --model ./my-model --dataset gsm8k --data-path ../shared/data/gsm8k \\
                --loss lovasz --ce-weight 0.6 --output-dir runs/x --max-steps 200
  segloss train --model ./my-model --dataset arith --loss ce=0.5,focal=0.25,lovasz=0.25 --output-dir runs/y
  segloss train --config runs/x/config.yaml --resume          # continue from the newest complete checkpoint
  segloss train --config runs/x/config.yaml --resume --learning-rate 1e-4 --resume-allow-changes   # recorded
  torchrun --nproc_per_node 2 -m segloss.cli train --config configs/gsm8k.yaml   # several processes

Every YAML key is also a flag (flags win). The run directory gets checkpoint-*/, the final adapter (or model with
--full-finetune), the tokenizer, config.yaml and train_summary.json.
"""

from __future__ import annotations

import argparse
import json

from segloss.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from segloss.training.config import TrainConfig

    add_config_arguments(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    from segloss.training import TrainConfig, train

    config = config_from_args(TrainConfig, args)
    result = train(config)
    if result.summary.get("world_size", 1) == 1 or _is_main():
        print(json.dumps({"output_dir": str(result.output_dir), **result.summary}, indent=2, default=str))
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
