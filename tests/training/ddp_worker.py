"""Run by test_train.py under torchrun (2 processes): a few steps, then each rank saves its trainable weights.

torchrun --nproc_per_node 2 ddp_worker.py MODEL_DIR OUTPUT_DIR [fused|materialised] [LOSS]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from training.helpers_train import tiny_config  # noqa: E402

from segloss.training import train  # noqa: E402


def main(model_dir: str, output_dir: str, head: str = "materialised", loss: str = "focal") -> None:
    torch.set_num_threads(1)
    config = tiny_config(
        Path(model_dir),
        Path(output_dir),
        loss=loss,
        max_steps=3,
        train_limit=8,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        save_steps=2,
        fused_loss=head == "fused",
    )
    result = train(config)
    trainable = {n: p.detach().cpu() for n, p in result.model.named_parameters() if p.requires_grad}
    rank = int(os.environ["RANK"])
    torch.save({"weights": trainable, "summary": result.summary}, Path(output_dir) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:5])
