"""Exact losses over an optimizer step made of several micro-batches (gradient accumulation) and processes (DDP).

An optimizer step sees the micro-batches m = 1..M of every process. Each micro-batch returns its **share** of the
step's loss; the shares add up to the loss of the whole step, so the summed gradient is the gradient of one big
batch, whatever the lengths of the micro-batches:

* token-local losses (ce, focal, sadl): ``Σ_{i ∈ m} ℓ_i / N``, N = the step's valid targets (all processes);
* region losses with ``group: sequence``: ``Σ_{s ∈ m} L_s / S``, S = the step's sequences with a valid target;
* region losses with ``group: batch`` are functions of statistics of all the step's tokens (the Dice family: sums
  per class; Lovász: the tokens' probabilities). A **statistics pass** computes them for every micro-batch
  without gradient, joins them (sum, or concatenation) across micro-batches and processes, and evaluates the loss
  L(S) and its gradient G = ∂L/∂S once. In the backward pass micro-batch m then contributes
  ``⟨G, s_m⟩ − ⟨G, s_m⟩.detach() + L(S) · n_m / N``: its gradient is exactly its part of ∂L/∂θ (chain rule through
  s_m), its value its share of L. With one micro-batch in total (no accumulation, one process) the loss is
  computed directly and no statistics pass runs.

:class:`StepAccumulator` does the counting, the reductions across processes (``torch.distributed``, when
initialised) and the statistics pass's bookkeeping; :class:`StepShare` is what one micro-batch's loss call receives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from segloss.losses import core
from segloss.losses.functional import reduce_values
from segloss.losses.table import IGNORE_INDEX, LossDef

if TYPE_CHECKING:
    from segloss.losses.modules import CombinedLoss


def world_size() -> int:
    """Processes of the default group (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce(tensor: torch.Tensor, op: Any = None) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def _all_gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows of ``tensor`` concatenated in rank order, and where this process's rows start."""
    if world_size() == 1:
        return tensor, 0
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    counts = [int(s) for s in sizes]
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    offset = sum(counts[: dist.get_rank()])
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)]), offset


@dataclasses.dataclass(frozen=True)
class StepCounts:
    """What an optimizer step holds, over all its micro-batches and processes."""

    labels: float  # valid CE targets
    answer: float  # valid answer (task-loss) targets
    sequences: float  # sequences with at least one valid answer target
    micro_batches: int


@dataclasses.dataclass(frozen=True)
class BatchTerm:
    """A ``group: batch`` loss after the statistics pass: its value on the whole step and ``∂L/∂S``."""

    value: torch.Tensor  # L(S), scalar, no gradient
    grads: tuple[torch.Tensor | None, ...]  # per statistic: G (sum), or this process's rows of G (cat)
    rows: list[int]  # cat: where each local micro-batch's rows start in ``grads`` (and the end)


@dataclasses.dataclass(frozen=True)
class StepShare:
    """What the loss of micro-batch ``index`` needs to return its exact share of the step's loss."""

    counts: StepCounts
    index: int
    n_answer: float  # this micro-batch's answer targets (how the value of a batch term is split)
    classes: torch.Tensor | None  # the step's present answer classes, for batch-group losses
    batch_terms: dict[str, BatchTerm] = dataclasses.field(default_factory=dict)

    def term(self, name: str, definition: LossDef, options: Any, tokens: core.TokenProbs) -> torch.Tensor:
        """This micro-batch's share of loss ``name`` (unweighted)."""
        if definition.kind == "token":
            values = definition.values(tokens, options)[0]
            total = self.counts.labels if name == "ce" else self.counts.answer
            return values.sum() if options.reduction == "sum" else values.sum() / max(total, 1.0)
        if options.group == "sequence":
            values, valid = definition.values(tokens, options)
            return torch.where(valid, values, torch.zeros_like(values)).sum() / max(self.counts.sequences, 1.0)
        term = self.batch_terms.get(name)
        if term is None:  # the step is this one micro-batch: the loss itself
            return reduce_values(definition, options, *definition.values(tokens, options))
        stats = definition.statistics_of(tokens, torch.zeros_like(tokens.seq), 1, options)
        surrogate = core.zero_like(tokens.log_p_target)
        for grad, stat in zip(term.grads, stats, strict=True):
            if grad is not None:
                part = grad if definition.combine == "sum" else grad[term.rows[self.index] : term.rows[self.index + 1]]
                surrogate = surrogate + (part.to(stat.dtype) * stat).sum()
        share = self.n_answer / max(self.counts.answer, 1.0)
        return surrogate - surrogate.detach() + term.value.to(surrogate.dtype) * share


class StepAccumulator:
    """The bookkeeping of one optimizer step for a :class:`~segloss.losses.CombinedLoss` (see the module docstring).

    Per step: :meth:`begin` with every local micro-batch's aligned ``(labels, answer_labels)`` (a collective call
    under DDP); then, if :attr:`needs_statistics`, :meth:`add_statistics` for each micro-batch (the loss's
    ``batch_statistics`` on a forward pass without gradient) and :meth:`finish_statistics` (collective); then each
    micro-batch's loss is called with ``step=accumulator.share(m)``.
    """

    def __init__(self, combined: CombinedLoss) -> None:
        self.combined = combined
        self.counts: StepCounts | None = None
        self.classes: torch.Tensor | None = None
        self.needs_statistics = False
        self._n_answer: list[float] = []
        self._stats: list[dict[str, tuple[torch.Tensor, ...]]] = []
        self._terms: dict[str, BatchTerm] = {}

    @property
    def local_micro_batches(self) -> int:
        """Micro-batches of this process in the current step."""
        return len(self._n_answer)

    def begin(
        self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str | None = None
    ) -> StepCounts:
        """Count the step's targets and sequences (all processes) and, for batch-group losses under accumulation,
        its present answer classes. ``batches``: aligned ``(labels [B, T], answer_labels [B, T])`` per micro-batch;
        ``device``: where the reductions run (the device of the process group's backend; default the labels')."""
        device = batches[0][0].device if device is None else torch.device(device)
        batches = [(labels.to(device), answer.to(device)) for labels, answer in batches]
        per_batch = [self.count_local(labels, answer) for labels, answer in batches]
        self._n_answer = [answer for _, answer, _ in per_batch]
        local = [sum(column) for column in zip(*per_batch, strict=True)] + [float(len(batches))]
        totals = _all_reduce(torch.tensor(local, dtype=torch.float64, device=device)).tolist()
        self.counts = StepCounts(totals[0], totals[1], totals[2], int(totals[3]))
        self.needs_statistics = bool(self.combined.batch_losses) and self.counts.micro_batches > 1
        self.classes = self._step_classes([answer for _, answer in batches]) if self.needs_statistics else None
        self._stats, self._terms = [], {}
        return self.counts

    @staticmethod
    def count_local(labels: torch.Tensor, answer_labels: torch.Tensor) -> tuple[float, float, float]:
        """(valid CE targets, valid answer targets, sequences with an answer target) of one aligned micro-batch."""
        answer = answer_labels != IGNORE_INDEX
        return float((labels != IGNORE_INDEX).sum()), float(answer.sum()), float(answer.any(1).sum())

    def _step_classes(self, answers: list[torch.Tensor]) -> torch.Tensor:
        targets = torch.cat([a[a != IGNORE_INDEX].reshape(-1) for a in answers]).long()
        top = torch.tensor([int(targets.max()) + 1 if targets.numel() else 0], device=targets.device)
        size = int(_all_reduce(top, dist.ReduceOp.MAX if world_size() > 1 else None))
        present = _all_reduce(torch.bincount(targets, minlength=size)[:size])
        return present.nonzero().squeeze(1)  # [K] sorted

    def share(self, index: int) -> StepShare:
        """What micro-batch ``index`` (of this process, in order) passes to the loss as ``step=``."""
        if self.counts is None:
            raise RuntimeError("StepAccumulator.share before begin(): count the step's micro-batches first")
        return StepShare(self.counts, index, self._n_answer[index], self.classes, self._terms)

    def add_statistics(self, stats: dict[str, tuple[torch.Tensor, ...]]) -> None:
        """The batch-group losses' statistics of the next micro-batch (from ``batch_statistics``, no gradient)."""
        self._stats.append(stats)

    def finish_statistics(self) -> None:
        """Join the statistics over micro-batches and processes; evaluate each batch-group loss and its ∂L/∂S."""
        definitions = self.combined.definitions()
        for name in self.combined.batch_losses:
            definition, options = definitions[name]
            parts = [stats[name] for stats in self._stats]
            joined, rows = self._join(definition, parts)
            leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in joined]
            wanted = [t for t in leaves if t.requires_grad]
            with torch.enable_grad():
                value = definition.score_of(type(parts[0])(*leaves), 1, options).sum()  # one group: the step
                grads = (
                    torch.autograd.grad(value, wanted, allow_unused=True)
                    if self._has_answer()
                    else [None] * len(wanted)
                )
            found = iter(grads)
            local = [next(found) if t.requires_grad else None for t in leaves]
            value = value.detach() if self._has_answer() else torch.zeros_like(value.detach())
            if definition.combine == "cat":
                local = [None if g is None else g[rows[0] : rows[-1]] for g in local]
                rows = [r - rows[0] for r in rows]
            self._terms[name] = BatchTerm(value, tuple(local), rows)

    def _has_answer(self) -> bool:
        return self.counts is not None and self.counts.answer > 0

    @staticmethod
    def _join(definition: LossDef, parts: list[tuple[torch.Tensor, ...]]) -> tuple[list[torch.Tensor], list[int]]:
        """The step's statistics (all processes) and, for ``cat``, this process's micro-batch row bounds in them."""
        columns = list(zip(*parts, strict=True))
        if definition.combine == "sum":
            return [_all_reduce(torch.stack(list(c)).sum(0)) for c in columns], []
        local = [torch.cat(list(c)) for c in columns]
        sizes = [p[0].shape[0] for p in parts]
        joined, offset = [], 0
        for tensor in local:
            gathered, offset = _all_gather_rows(tensor)
            joined.append(gathered)
        rows = [offset + sum(sizes[:i]) for i in range(len(sizes) + 1)]
        return joined, rows
