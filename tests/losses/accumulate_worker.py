"""Run by test_accumulate.py under torchrun (2 CPU processes, gloo): each rank holds one micro-batch of uneven length
and computes every case's step gradient (materialised and fused head); rank 0 saves them.

torchrun --nproc_per_node 2 accumulate_worker.py OUTPUT_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.accumulation import CASES, TinyLM, case_id, collate, combined_of, sequences, step_gradients


def main(output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rows = sequences()
    mine = [collate(rows[:2])] if dist.get_rank() == 0 else [collate(rows[2:])]
    results = {}
    for case in CASES:
        for fused in (False, True):
            results[(case_id(case), fused)] = step_gradients(TinyLM(), mine, combined_of(case), fused=fused)
    if dist.get_rank() == 0:
        torch.save(results, output)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
