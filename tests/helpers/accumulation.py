"""One optimizer step of a tiny float64 model, computed as the Trainer does it: whole, accumulated, or on 2 processes.

Shared by tests/losses/test_accumulate.py and its DDP worker (accumulate_worker.py). The step follows
``CombinedLossMixin``: ``StepAccumulator.begin`` on every micro-batch's aligned labels, the statistics pass when a
``group: batch`` loss needs it, then each micro-batch's share of the loss (× the world size, as DDP averages), and
the gradients all-reduced and averaged over processes (what DDP does).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from segloss.losses import LOSS_TABLE, LOSSES, CombinedLoss, FusedLinearCombinedLoss, StepAccumulator, causal_shift

VOCAB, WIDTH = 13, 6
REGION = [name for name in LOSSES if LOSS_TABLE[name].kind == "region"]
# Every loss alone, region losses with both groupings; classes="all" for every region loss with its default group.
CASES: list[tuple[str, dict[str, str]]] = [(name, {}) for name in LOSSES if LOSS_TABLE[name].kind == "token"]
CASES += [(name, {"group": group}) for name in REGION for group in ("sequence", "batch")]
CASES += [(name, {"classes": "all"}) for name in REGION]


def case_id(case: tuple[str, dict[str, str]]) -> str:
    name, options = case
    return "-".join([name, *options.values()])


class TinyLM(nn.Module):
    """Embedding → tanh(linear) → head, float64: a causal LM's interface for what the loss sees."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(VOCAB, WIDTH, generator=gen, dtype=torch.float64))
        self.mix = nn.Parameter(torch.randn(WIDTH, WIDTH, generator=gen, dtype=torch.float64) / WIDTH**0.5)
        self.head = nn.Parameter(torch.randn(VOCAB, WIDTH, generator=gen, dtype=torch.float64) / WIDTH**0.5)

    def body(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed[ids]  # [B, T, H]
        context = hidden.cumsum(1) / torch.arange(1, ids.shape[1] + 1, dtype=hidden.dtype)[:, None]  # causal mean
        return torch.tanh(context @ self.mix)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.body(ids) @ self.head.t()  # [B, T, V]


def sequences() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Four (ids, labels, answer_labels) of uneven lengths; the second has no answer (its prompt was all it had)."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for length, prompt in ((5, 2), (4, 4), (9, 3), (12, 5)):
        ids = torch.randint(0, VOCAB, (length,), generator=gen)
        answer = ids.clone()
        answer[:prompt] = -100
        out.append((ids, ids.clone(), answer))
    return out


def collate(rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """Right-padded ``[B, T]`` ids (0), labels and answer labels (−100), T = the longest row of this batch."""
    width = max(len(r[0]) for r in rows)
    out = []
    for column, pad in ((0, 0), (1, -100), (2, -100)):
        tensor = torch.full((len(rows), width), pad, dtype=torch.long)
        for i, row in enumerate(rows):
            tensor[i, : len(row[column])] = row[column]
        out.append(tensor)
    return tuple(out)


def combined_of(case: tuple[str, dict[str, str]]) -> CombinedLoss:
    name, options = case
    return CombinedLoss({name: 1.0}, {name: options} if options else None)


def step_gradients(
    model: TinyLM,
    micro_batches: list[tuple[torch.Tensor, ...]],
    combined: CombinedLoss,
    *,
    fused: bool = False,
    exact: bool = True,
) -> dict[str, torch.Tensor]:
    """The gradient of one optimizer step over ``micro_batches`` (this process's), averaged over processes.

    ``exact=False`` is the naive accumulation the tests must be able to tell apart: each micro-batch's plain loss
    divided by the number of micro-batches.
    """
    world = dist.get_world_size() if dist.is_initialized() else 1
    accumulator = StepAccumulator(combined)
    head = FusedLinearCombinedLoss.from_combined(combined, chunk_size=3) if fused else None
    targets = [causal_shift(labels, answer) for _, labels, answer in micro_batches]
    accumulator.begin(targets)
    if accumulator.needs_statistics and exact:
        with torch.no_grad():
            for index, ((ids, *_), (_, answer)) in enumerate(zip(micro_batches, targets, strict=True)):
                step = accumulator.share(index)
                if head is None:
                    stats = combined.batch_statistics(model(ids), answer, step)
                else:
                    stats = head.batch_statistics(model.body(ids), model.head, answer, step=step)
                accumulator.add_statistics(stats)
        accumulator.finish_statistics()
    model.zero_grad()
    for index, ((ids, *_), (labels, answer)) in enumerate(zip(micro_batches, targets, strict=True)):
        step = accumulator.share(index) if exact else None
        if head is None:
            terms = combined.components(model(ids), labels, answer, step=step)
        else:
            terms = head.components(model.body(ids), model.head, labels, answer, step=step)
        scale = world if exact else 1 / accumulator.counts.micro_batches  # type: ignore[union-attr]
        (terms["total"] * scale).backward()
    grads = {}
    for name, param in model.named_parameters():
        grad = param.grad.detach().clone()
        if world > 1:
            dist.all_reduce(grad)
            grad /= world
        grads[name] = grad
    return grads
