"""`SeglossTrainer`: a Hugging Face `Trainer` whose loss is a `CombinedLoss`, exact under accumulation and DDP.

The model runs **without** ``labels`` (so it computes no loss of its own); labels are aligned to next-token logits
once, with `causal_shift`, and the combined objective sees ``logits [B, T, V]``, ``labels [B, T]`` (CE targets: every
real token) and answer labels ``[B, T]`` (task-loss targets: ``labels`` where TRL's ``completion_mask`` is 1, the
answer tokens).

Exact accumulation (``segloss.losses.accumulate``). Every micro-batch returns its **share** of the optimizer step's
loss, counted over all micro-batches and processes: a token-local loss (ce, focal, sadl) divides its sum over the
micro-batch's tokens by the step's valid targets, a per-sequence region loss (``group: sequence``) its sum over
sequences by the step's sequences, and a batch-level region loss (``group: batch``) takes part in a **statistics
pass** — a forward pass without gradient over every micro-batch, whose statistics (class sums, or Lovász's
per-token probabilities) are joined across micro-batches and processes before the loss and its gradient are
evaluated once; the backward pass then gives each micro-batch exactly its part of that gradient. The random state
of each micro-batch's statistics forward is replayed in its training forward (CPU and CUDA), so dropout masks agree.
DDP averages gradients over the P processes, so the local loss is multiplied by P.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer

from segloss.losses import (
    IGNORE_INDEX,
    CombinedLoss,
    FusedLinearCombinedLoss,
    StepAccumulator,
    StepShare,
    causal_shift,
)
from segloss.training.checkpoints import CheckpointLoadGuard
from segloss.training.fused_head import body_only

logger = logging.getLogger(__name__)


def exactness_problems(combined: CombinedLoss, *, padding_free: bool = False) -> list[str]:
    """The parts of an objective that are not exact under accumulation and DDP in this setting (one phrase each)."""
    problems = []
    per_sequence = [n for n, (d, o) in combined.definitions().items() if d.kind == "region" and o.group == "sequence"]
    if padding_free and per_sequence:
        problems.append(
            f"{', '.join(per_sequence)} with group: sequence on padding-free batches (each packed row counts as one "
            "sequence; set padding_free=False, or group: batch)"
        )
    return problems


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


if TYPE_CHECKING:  # the mixin reads the Trainer's attributes; only type checkers need to know them
    _TrainerBase = Trainer
else:
    _TrainerBase = object


class CombinedLossMixin(_TrainerBase):
    """Makes a `Trainer` — or a subclass such as TRL's `SFTTrainer` — optimise a `CombinedLoss`, exact under GA.

    Put it first: ``class MyTrainer(CombinedLossMixin, Trainer)``, constructed with ``combined_loss=...`` plus the
    Trainer's own arguments. It owns the three pieces a plain ``compute_loss_func`` cannot provide:

    * ``get_batch_samples`` counts, once per optimizer step, the valid CE and answer targets of the whole
      accumulated batch (all processes), so ``compute_loss`` can weight each micro-batch exactly (module docstring);
    * ``compute_loss`` runs the model without labels, aligns the targets (`causal_shift`) and returns the
      micro-batch's share of the step's loss (``loss_is_scaled_for_ga``: the Trainer does not divide it again);
    * ``log`` adds ``ce``, ``task``, ``total`` (and ``task_<name>`` per task loss when there are several).

    Subclasses say where the targets are: :meth:`loss_targets` (CE labels, answer labels; unshifted ``[B, T]``)
    and :meth:`model_inputs` (what the model is called with). The defaults read the ``labels`` and
    ``completion_mask`` of TRL's batches (`segloss.integrations.trl.padding_collator`).
    """

    # compute_loss returns the accumulated-batch share of the loss: the Trainer must not divide it by GA again.
    loss_is_scaled_for_ga: bool | None = True
    # Whether sequence_rows splits padding-free rows into their sequences (then per-sequence losses stay exact).
    unpacks_padding_free: bool = False

    def __init__(self, *args: Any, combined_loss: CombinedLoss, fused_loss: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.combined_loss = combined_loss
        # With fused_loss the model runs its body only; the head is applied inside the loss, in row chunks.
        self.fused_loss = FusedLinearCombinedLoss.from_combined(combined_loss) if fused_loss else None
        self.model_accepts_loss_kwargs = False  # the model never sees labels, hence never num_items_in_batch
        self.step_accumulator = StepAccumulator(combined_loss)  # this optimizer step's counts and statistics
        self._micro_batch = 0  # which micro-batch of the step compute_loss sees next
        self._replay: list[tuple[torch.Tensor, list[torch.Tensor] | None]] = []  # RNG state per statistics forward
        padding_free = bool(getattr(self.args, "padding_free", False)) and not self.unpacks_padding_free
        self.warn_if_not_exact(padding_free=padding_free)
        self._sums: dict[str, torch.Tensor] = {}
        self._summed_steps_at = 0  # global_step when _sums started (the resumed step after a resume)
        self.last_components: dict[str, float] = {}
        self._run_loss = torch.zeros(())  # this session's sum of per-step losses (RunLedger adds earlier sessions)

    def loss_targets(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE labels, answer labels) of a batch, unshifted ``[B, T]`` with -100 where a loss does not look: the
        labels, and the labels of the completion tokens (all of them when the batch has no ``completion_mask``)."""
        labels = inputs["labels"]
        mask = inputs.get("completion_mask")
        return labels, labels if mask is None else labels.masked_fill(mask == 0, IGNORE_INDEX)

    def model_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The model's keyword arguments: the batch without its targets (so the model computes no loss)."""
        return {k: v for k, v in inputs.items() if k not in ("labels", "completion_mask")}

    def warn_if_not_exact(self, *, padding_free: bool = False) -> None:
        """One warning line naming the parts of the objective that are not exact in this setting (if any)."""
        problems = exactness_problems(self.combined_loss, padding_free=padding_free)
        if problems:
            logger.warning("loss not exact under accumulation/DDP: %s", "; ".join(problems))

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._micro_batch, self._replay = 0, []
        if not batch_samples:
            return batch_samples, num_items
        targets = [causal_shift(*self.loss_targets(batch)) for batch in batch_samples]
        accumulator = self.step_accumulator
        accumulator.begin([(labels, answer) for labels, answer in targets], device=self.args.device)  # collective
        if accumulator.needs_statistics:
            self._statistics_pass(batch_samples, [answer for _, answer in targets])
        return batch_samples, num_items

    @torch.no_grad()
    def _statistics_pass(self, batch_samples: list[dict[str, Any]], answers: list[torch.Tensor]) -> None:
        """The batch-level losses' statistics of every micro-batch (no gradient), joined before any backward."""
        for index, (batch, answer_labels) in enumerate(zip(batch_samples, answers, strict=True)):
            inputs = self._prepare_inputs(batch)
            step = self.step_accumulator.share(index)
            answer_labels = answer_labels.to(self.args.device)
            self._replay.append(_rng_state())
            with self.compute_loss_context_manager():
                _, values, head = self._forward(self.model, inputs, fused=self.fused_loss is not None)
                if head is not None and self.fused_loss is not None:
                    stats = self.fused_loss.batch_statistics(values, head.weight, answer_labels, head.bias, step=step)
                else:
                    stats = self.combined_loss.batch_statistics(values, answer_labels, step)
            self.step_accumulator.add_statistics(stats)
        self.step_accumulator.finish_statistics()  # collective

    def _forward(self, model: Any, inputs: dict[str, Any], *, fused: bool) -> tuple[Any, torch.Tensor, Any]:
        """``(outputs, values, head)``: the model's outputs and logits ``[B, T, V]`` (head None), or — ``fused`` —
        no outputs, the hidden states ``[B, T, H]`` in the head's dtype and the head, which the loss applies; one
        sequence per row (:meth:`sequence_rows`)."""
        model_inputs = self.model_inputs(inputs)  # no labels: the model computes no loss of its own
        if fused:
            with body_only(model) as head:
                hidden = model(**model_inputs).logits  # [B, T, H]: the head is inside the loss
            return None, self.sequence_rows(hidden.to(head.weight.dtype), inputs, 0.0), head
        outputs = model(**model_inputs)
        return outputs, self.sequence_rows(outputs.logits, inputs, 0.0), None

    def sequence_rows(self, tensor: torch.Tensor, inputs: dict[str, Any], fill: float) -> torch.Tensor:
        """``tensor [B, T, ...]`` laid out with one sequence per row, as the per-sequence losses count them: as it
        is here (`SeglossSFTTrainer` unpacks TRL's padding-free rows)."""
        return tensor

    def observe(
        self,
        inputs: dict[str, Any],
        labels: torch.Tensor,
        terms: dict[str, torch.Tensor],
        values: torch.Tensor,
        head: Any,
    ) -> None:
        """Called after each loss with the batch, its shifted CE ``labels``, the weighted ``terms`` and what
        :meth:`_forward` returned (for metrics; nothing here)."""

    def _step_share(self, model: torch.nn.Module) -> StepShare | None:
        """This micro-batch's place in the optimizer step (None outside the training loop: plain values)."""
        accumulator = self.step_accumulator
        if not model.training or accumulator.counts is None or self._micro_batch >= accumulator.local_micro_batches:
            return None
        index, self._micro_batch = self._micro_batch, self._micro_batch + 1
        if self._replay:
            _set_rng_state(self._replay[index])  # the dropout masks of this micro-batch's statistics forward
        return accumulator.share(index)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        labels, answer_labels = causal_shift(*self.loss_targets(inputs))  # [B, T], aligned with position t
        step = self._step_share(model)
        # evaluation wants logits: it takes the materialised path
        outputs, values, head = self._forward(model, inputs, fused=self.fused_loss is not None and not return_outputs)
        if head is not None and self.fused_loss is not None:
            terms = self.fused_loss.components(values, head.weight, labels, answer_labels, head.bias, step=step)
        else:
            terms = self.combined_loss.components(values, labels, answer_labels, step=step)  # values [B, T, V]
        self.observe(inputs, labels, terms, values, head)
        # Each term is this micro-batch's share of the step's loss; DDP averages over processes, hence × P.
        world = self.accelerator.num_processes if step is not None else 1
        loss = terms["total"] * world
        if model.training:
            self._accumulate({n: v.detach() * world for n, v in terms.items() if n != "total"})
        return (loss, outputs) if return_outputs else loss

    def _accumulate(self, scaled: dict[str, torch.Tensor]) -> None:
        if not self._sums:  # first micro-batch since the last log: count steps from here (not from 0 after a resume)
            self._summed_steps_at = self.state.global_step
        for name, value in scaled.items():
            self._sums[name] = self._sums.get(name, 0.0) + value.detach().float()
        self._run_loss = self._run_loss + sum(v.detach().float().cpu() for v in scaled.values())

    def run_loss_sum(self) -> float:
        """Sum over this session's optimizer steps of the step loss (this process; the Trainer's convention)."""
        return float(self._run_loss)

    def pop_components(self) -> dict[str, float]:
        """Average weighted terms since the last call (mean over processes); resets the sums. Collective call."""
        steps = self.state.global_step - self._summed_steps_at
        if steps <= 0 or not self._sums:
            return {}
        names = sorted(self._sums)
        values = torch.stack([torch.as_tensor(self._sums[n]) for n in names]).to(self.args.device)
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, reduction="mean")
        averaged = dict(zip(names, (values / steps).tolist(), strict=True))
        self._sums, self._summed_steps_at = {}, self.state.global_step
        task = {n: v for n, v in averaged.items() if n != "ce"}
        logs = {"ce": averaged.get("ce", 0.0), "task": sum(task.values()), "total": sum(averaged.values())}
        if len(task) > 1:
            logs.update({f"task_{n}": v for n, v in task.items()})
        self.last_components = logs
        return logs

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training-loss log: every process reaches this point together
            logs = {**logs, **self.pop_components()}
        super().log(logs, start_time)


class SeglossTrainer(CombinedLossMixin, CheckpointLoadGuard, Trainer):
    """`Trainer` optimising ``combined_loss(logits, labels, answer_labels)`` with exact gradient accumulation.

    For a plain `Trainer` loop over already tokenized rows (``segloss train`` runs
    `segloss.integrations.trl.SeglossSFTTrainer`): the batches are TRL's, ``labels`` (CE targets) and
    ``completion_mask`` (the task loss's tokens), e.g. rows of `segloss.data.tokenize_examples` collated by
    `segloss.integrations.trl.padding_collator`; everything else is :class:`CombinedLossMixin`. A resume checkpoint
    whose files fail to load raises `CheckpointLoadError` (:class:`~segloss.training.checkpoints.CheckpointLoadGuard`).
    Logs, at every logging step, ``ce``, ``task`` (sum of the non-CE terms) and ``total`` — averages over the
    optimizer steps since the last log, each term already weighted — plus ``task_<name>`` per task loss when there
    are several.
    """
