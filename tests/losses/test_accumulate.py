"""Every loss, both groupings, is exact under gradient accumulation with uneven micro-batches and under DDP.

One optimizer step (SGD) of a tiny float64 model over four sequences of uneven lengths (one without an answer) is
computed whole (batch 4), accumulated (2 micro-batches of 2, padded to their own lengths), and on two gloo processes
(one micro-batch each); the updates must agree to 1e-9 relative. The naive accumulation (the mean of the
micro-batches' losses) must differ, so each comparison can fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.accumulation import CASES, TinyLM, case_id, collate, combined_of, sequences, step_gradients

from segloss.losses import StepAccumulator, causal_shift

HERE = Path(__file__).resolve().parent


def sgd_update(grads: dict[str, torch.Tensor], lr: float = 0.5) -> torch.Tensor:
    """The parameter change of one SGD step with these gradients, flattened."""
    model = TinyLM()
    before = torch.cat([p.detach().clone().reshape(-1) for p in model.parameters()])
    for name, param in model.named_parameters():
        param.grad = grads[name]
    torch.optim.SGD(model.parameters(), lr=lr).step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]) - before


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def whole_and_split() -> tuple[list[tuple[torch.Tensor, ...]], list[tuple[torch.Tensor, ...]]]:
    rows = sequences()
    return [collate(rows)], [collate(rows[:2]), collate(rows[2:])]


def test_the_micro_batches_are_uneven() -> None:
    _, split = whole_and_split()
    counts = [StepAccumulator.count_local(*causal_shift(labels, answer)) for _, labels, answer in split]
    assert len({c[0] for c in counts}) == 2 and len({c[1] for c in counts}) == 2  # CE and answer targets differ
    assert [c[2] for c in counts] == [1.0, 2.0]  # sequences with an answer: one of the first two has none


@pytest.mark.parametrize("fused", [False, True], ids=["materialised", "fused"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_one_sgd_step_whole_equals_accumulated(case, fused) -> None:
    whole, split = whole_and_split()
    expected = sgd_update(step_gradients(TinyLM(), whole, combined_of(case), fused=fused))
    accumulated = sgd_update(step_gradients(TinyLM(), split, combined_of(case), fused=fused))
    naive = sgd_update(step_gradients(TinyLM(), split, combined_of(case), fused=fused, exact=False))
    assert float(expected.norm()) > 1e-3
    assert relative(accumulated, expected) < 1e-9
    assert relative(naive, expected) > 1e-3  # the test data can tell exact from naive accumulation


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path) -> None:
    output = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(_free_port()), str(HERE / "accumulate_worker.py"), str(output)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(output)
    whole, _ = whole_and_split()
    assert len(results) == 2 * len(CASES)
    for case in CASES:
        for fused in (False, True):
            expected = sgd_update(step_gradients(TinyLM(), whole, combined_of(case), fused=fused))
            assert relative(sgd_update(results[(case_id(case), fused)]), expected) < 1e-9, (case, fused)
