"""Subprocess of the fault suite: `segloss eval` on the tiny model, interrupted by a real signal at a chosen point.

python interrupt_worker.py MODE MODEL_DIR OUTPUT_DIR
MODE: sigint-generating  (Ctrl-C while answers are generated)
      sigterm-predictions (SIGTERM while predictions.jsonl is being written: its temporary file exists)
      sigterm-metrics     (SIGTERM while metrics.json is being written, after predictions.jsonl)
"""

from __future__ import annotations

import os
import signal
import sys
import time

import segloss.evaluation.evaluate  # noqa: F401  (loads the module into sys.modules)
import segloss.fileio as fileio
from segloss.cli import main

# The package re-exports the function `evaluate`, which hides the module of the same name.
evaluate_module = sys.modules["segloss.evaluation.evaluate"]

ARITH = "{n_train: 4, n_validation: 2, n_test: 6, max_steps: 2}"


def _deliver(sig: signal.Signals) -> None:
    # raise_signal targets this (main) thread and runs the handler before it returns; os.kill(getpid()) may hand the
    # signal to a torch/tokenizers thread under load, and the main thread then sees it only after the sleep below.
    signal.raise_signal(sig)
    time.sleep(5)  # reaching the end means the signal was lost


def install(mode: str) -> None:
    if mode == "sigint-generating":
        evaluate_module.generate_all = lambda *args, **kwargs: _deliver(signal.SIGINT)  # type: ignore[assignment]
        return
    target = "predictions.jsonl" if mode == "sigterm-predictions" else "metrics.json"
    replace = os.replace

    def replace_or_die(src: str, dst: object) -> None:
        if str(dst).endswith(target):
            _deliver(signal.SIGTERM)
        replace(src, dst)  # type: ignore[arg-type]

    fileio.os.replace = replace_or_die  # type: ignore[attr-defined]


if __name__ == "__main__":
    # A job started in the background of a non-interactive shell (`make test &`, nohup) inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler; Ctrl-C at a terminal has one, so this worker restores it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, model_dir, output_dir = sys.argv[1:4]
    install(mode)
    argv = ["eval", "--model", model_dir, "--dataset", "arith", "--dataset-options", ARITH, "--limit", "2"]
    sys.exit(main([*argv, "--max-new-tokens", "2", "--output-dir", output_dir]))
