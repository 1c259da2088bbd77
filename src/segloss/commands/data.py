"""Show examples and statistics of the datasets (gsm8k, mathqa, openbookqa, hellaswag, arith).

    segloss data show gsm8k --data-path ../shared/data/gsm8k -n 3
    segloss data show mathqa --data-path ../shared/data/mathqa --split dev -n 2
    segloss data show openbookqa --data-path ../shared/data/openbookqa --split test -n 2
    segloss data show arith -n 3 --dataset-options '{max_steps: 4, distractors: 2}'
    segloss data stats gsm8k --data-path ../shared/data/gsm8k
    segloss data stats gsm8k --data-path ../shared/data/gsm8k --tokenizer path/to/tokenizer_dir --max-length 512
    segloss data stats hellaswag --data-path /data/hellaswag        # a local copy of rowanz/hellaswag's jsonl files

`stats` prints the examples and skipped records per split (a split without a file is reported as absent — MathQA's
train split is not shipped locally, dev stands in), and with --tokenizer (a local directory) the kept/dropped
counts at --max-length and nearest-rank token-length percentiles. Without --data-path the hub id is used when online.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from segloss.config import config_field


@dataclass
class DataConfig:
    data_path: str | None = config_field(None, help="Local data: a split file or the dataset's directory.")
    split: str | None = config_field(None, help="train, validation (dev) or test; show: train, stats: all.")
    n: int = config_field(3, help="show: number of examples to print.")
    seed: int = config_field(42, help="Seed of derived validation splits and of synthetic data.")
    tokenizer: str | None = config_field(None, help="stats: local tokenizer directory for token lengths.")
    max_length: int = config_field(512, help="stats: max_length used to count kept/dropped examples.")
    dataset_options: dict[str, Any] = config_field(
        {}, help="Builder options as YAML, e.g. '{max_steps: 4}' for arith."
    )

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if not isinstance(self.dataset_options, dict):
            raise ValueError(
                f"dataset_options must be a mapping like '{{max_steps: 4}}', got {self.dataset_options!r}"
            )


# Older spellings, kept working: train/eval/grid call these --data-path and --dataset-options.
ALIASES = {"-n": "--n", "--path": "--data_path", "--options": "--dataset_options"}


@dataclass
class DataArgs:
    action: str  # show | stats
    dataset: str
    config: DataConfig


def parse(argv: Sequence[str], prog: str = "segloss data") -> DataArgs:
    """``segloss data ACTION DATASET`` and the `DataConfig` of the flags, typed by the parser every command uses."""
    from segloss.config import parse_configs, typed_parser

    parser = typed_parser(DataConfig, prog=prog, description=__doc__)
    parser.add_argument("action", choices=["show", "stats"], help="show examples, or print per-split statistics")
    parser.add_argument("dataset", help="gsm8k, mathqa, openbookqa, hellaswag or arith")
    argv = [_alias(arg) for arg in argv]
    (config,), rest = parse_configs(parser, [DataConfig], argv)
    return DataArgs(action=rest["action"], dataset=rest["dataset"], config=config)


def _alias(arg: str) -> str:
    name, sep, value = arg.partition("=")
    return ALIASES.get(name, name) + sep + value


def run(args: DataArgs) -> int:
    from segloss.data.base import get_builder
    from segloss.data.stats import format_example, format_stats, load_tokenizer, split_stats

    config = args.config
    if args.action == "show":
        examples = get_builder(args.dataset, **config.dataset_options).load(
            config.split or "train", config.data_path, limit=config.n, seed=config.seed
        )
        print("\n\n".join(format_example(e) for e in examples))
        return 0
    tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else None
    rows = split_stats(
        args.dataset,
        config.data_path,
        splits=[config.split] if config.split else None,
        tokenizer=tokenizer,
        max_length=config.max_length,
        seed=config.seed,
        **config.dataset_options,
    )
    print(format_stats(args.dataset, rows))
    return 0
