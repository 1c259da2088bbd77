"""Subprocess of the fault suite: train the reference run and SIGKILL itself while checkpoint-<step> is being
written (after the optimizer state, before the RNG state and trainer_state.json), as a kill -9 at that moment does.

    python kill_worker.py MODEL_DIR OUTPUT_DIR STEP
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared helpers

from reliability.conftest import RUN
from training.helpers_train import tiny_config
from transformers import Trainer

from segloss.training import train


def main() -> None:
    model_dir, output_dir, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
    original = Trainer._save_optimizer_and_scheduler

    def save_then_die(self: Trainer, folder: str) -> None:
        original(self, folder)
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save_optimizer_and_scheduler = save_then_die  # type: ignore[method-assign]
    train(tiny_config(Path(model_dir), Path(output_dir), **RUN))


if __name__ == "__main__":
    main()
