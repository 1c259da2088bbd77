"""`SeglossTrainer`: a Hugging Face `Trainer` whose loss is a `CombinedLoss`, with exact gradient accumulation.

The model runs **without** ``labels`` (so it computes no loss of its own); labels are aligned to next-token logits
once, with `causal_shift`, and the combined objective sees ``logits [B, T, V]``, ``labels [B, T]`` (CE targets: every
real token) and ``answer_labels [B, T]`` (task-loss targets: the answer tokens).

Exact accumulation. A token-mean loss (ce, focal, sadl) over an accumulated batch of micro-batches m = 1..M is

    L = Σ_m (n_m / N) · L_m,     L_m = mean over the n_m valid targets of micro-batch m,  N = Σ_m n_m,

so each micro-batch's mean is weighted by its share of the valid targets, counted over **all** processes (DDP
averages gradients over the P processes, so the local weight is multiplied by P). CE counts ``labels`` targets, the
task losses count ``answer_labels`` targets. Region losses (gdice, lovasz) are set-level scores of one micro-batch;
they are averaged over micro-batches (weight P / M_total), which equals the single-batch value only when M = 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer

from segloss.losses import IGNORE_INDEX, CombinedLoss, FusedLinearCombinedLoss, causal_shift
from segloss.losses.functional import CORES
from segloss.training.checkpoints import CheckpointLoadGuard
from segloss.training.fused_head import body_only

# Losses that are means over tokens (ce, focal, sadl); the others (gdice, lovasz) read the present classes.
TOKEN_MEAN_LOSSES = frozenset(name for name, (_, needs_present) in CORES.items() if not needs_present)


def count_targets(labels: torch.Tensor) -> torch.Tensor:
    """Valid next-token targets of unshifted ``labels [B, T]`` (position 0 is never a target)."""
    return labels[..., 1:].ne(IGNORE_INDEX).sum()


def term_scales(
    names: list[str],
    *,
    n_labels: float,
    n_answer: float,
    total_labels: float,
    total_answer: float,
    micro_batches: float,
    world_size: int = 1,
) -> dict[str, float]:
    """Weight of each loss term of one micro-batch so that summing over the accumulated batch is exact.

    ``n_*``: valid targets of this micro-batch; ``total_*``: over all micro-batches of the optimizer step and all
    processes; ``micro_batches``: their count over all processes. A zero total gives weight 0 (that term has no
    targets anywhere, and its loss is zero with zero gradient).
    """
    scales = {}
    for name in names:
        if name == "ce":
            scales[name] = world_size * n_labels / total_labels if total_labels > 0 else 0.0
        elif name in TOKEN_MEAN_LOSSES:
            scales[name] = world_size * n_answer / total_answer if total_answer > 0 else 0.0
        else:
            scales[name] = world_size / micro_batches if micro_batches > 0 else 0.0
    return scales


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
    and :meth:`model_inputs` (what the model is called with). The defaults read segloss's ``labels`` and
    ``answer_labels`` columns.
    """

    # compute_loss returns the accumulated-batch share of the loss: the Trainer must not divide it by GA again.
    loss_is_scaled_for_ga: bool | None = True

    def __init__(self, *args: Any, combined_loss: CombinedLoss, fused_loss: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.combined_loss = combined_loss
        # With fused_loss the model runs its body only; the head is applied inside the loss, in row chunks.
        self.fused_loss = FusedLinearCombinedLoss.from_combined(combined_loss) if fused_loss else None
        self.model_accepts_loss_kwargs = False  # the model never sees labels, hence never num_items_in_batch
        self._step_counts: torch.Tensor | None = None  # [labels targets, answer targets, micro-batches], global
        self._sums: dict[str, torch.Tensor] = {}
        self._summed_steps_at = 0  # global_step when _sums started (the resumed step after a resume)
        self.last_components: dict[str, float] = {}
        self._run_loss = torch.zeros(())  # this session's sum of per-step losses (RunLedger adds earlier sessions)

    def loss_targets(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE labels, answer labels) of a batch, unshifted ``[B, T]`` with -100 where a loss does not look."""
        return inputs["labels"], inputs["answer_labels"]

    def model_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The model's keyword arguments: the batch without its targets (so the model computes no loss)."""
        return {k: v for k, v in inputs.items() if k not in ("labels", "answer_labels")}

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(3, dtype=torch.int64)
        for batch in batch_samples:
            labels, answer_labels = self.loss_targets(batch)
            counts += torch.stack([count_targets(labels), count_targets(answer_labels), torch.tensor(1)]).cpu()
        counts = counts.to(self.args.device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        self._step_counts = counts.cpu()
        return batch_samples, num_items

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        labels, answer_labels = self.loss_targets(inputs)
        model_inputs = self.model_inputs(inputs)  # no labels: the model computes no loss of its own
        labels, answer_labels = causal_shift(labels, answer_labels)  # [B, T], aligned with position t's prediction
        if self.fused_loss is not None and not return_outputs:  # evaluation wants logits: it takes the other path
            with body_only(model) as head:
                hidden = model(**model_inputs).logits  # [B, T, H]: the head is inside the loss
            outputs = None
            weight = head.weight
            terms = self.fused_loss.components(hidden.to(weight.dtype), weight, labels, answer_labels, head.bias)
        else:
            outputs = model(**model_inputs)
            terms = self.combined_loss.components(outputs.logits, labels, answer_labels)  # logits [B, T, V]
        names = [n for n in terms if n != "total"]
        if self._step_counts is None or not model.training:
            scales = dict.fromkeys(names, 1.0)  # outside the training loop: the plain micro-batch value
        else:
            total_labels, total_answer, micro_batches = (float(c) for c in self._step_counts)
            scales = term_scales(
                names,
                n_labels=float(labels.ne(IGNORE_INDEX).sum()),
                n_answer=float(answer_labels.ne(IGNORE_INDEX).sum()),
                total_labels=total_labels,
                total_answer=total_answer,
                micro_batches=micro_batches,
                world_size=self.accelerator.num_processes,
            )
        scaled = {n: terms[n] * scales[n] for n in names}
        loss = torch.stack(list(scaled.values())).sum() if scaled else terms["total"] * 0.0
        if model.training:
            self._accumulate(scaled)
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

    The batches carry ``labels`` (CE targets) and ``answer_labels`` (task-loss targets), as `segloss.data` builds
    them; everything else is :class:`CombinedLossMixin`. A resume checkpoint whose files fail to load raises
    `CheckpointLoadError` (:class:`~segloss.training.checkpoints.CheckpointLoadGuard`), which ``train`` turns into a
    fall back to an older checkpoint. Logs, at every logging step, ``ce``, ``task`` (sum of the
    non-CE terms) and ``total`` — averages over the optimizer steps since the last log, each term already
    weighted — plus ``task_<name>`` per task loss when there are several.
    """
