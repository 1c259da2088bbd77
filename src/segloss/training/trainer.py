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

from typing import Any

import torch
from transformers import Trainer

from segloss.losses import IGNORE_INDEX, CombinedLoss, FusedLinearCombinedLoss, causal_shift
from segloss.losses.functional import CORES
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


class SeglossTrainer(Trainer):
    """`Trainer` optimising ``combined_loss(logits, labels, answer_labels)`` with exact gradient accumulation.

    Logs, at every logging step, ``ce``, ``task`` (sum of the non-CE terms) and ``total`` — averages over the
    optimizer steps since the last log, each term already weighted — plus ``task_<name>`` per task loss when there
    are several.
    """

    # compute_loss returns the accumulated-batch share of the loss: the Trainer must not divide it by GA again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, combined_loss: CombinedLoss, fused_loss: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.combined_loss = combined_loss
        # With fused_loss the model runs its body only; the head is applied inside the loss, in row chunks.
        self.fused_loss = FusedLinearCombinedLoss.from_combined(combined_loss) if fused_loss else None
        self.model_accepts_loss_kwargs = False  # the model never sees labels, hence never num_items_in_batch
        self._step_counts: torch.Tensor | None = None  # [labels targets, answer targets, micro-batches], global
        self._sums: dict[str, torch.Tensor] = {}
        self._summed_steps_at = 0  # global_step when _sums was last reset
        self.last_components: dict[str, float] = {}

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(3, dtype=torch.int64)
        for batch in batch_samples:
            counts += torch.stack(
                [count_targets(batch["labels"]), count_targets(batch["answer_labels"]), torch.tensor(1)]
            ).cpu()
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
        inputs = dict(inputs)
        labels, answer_labels = inputs.pop("labels"), inputs.pop("answer_labels")
        labels, answer_labels = causal_shift(labels, answer_labels)  # [B, T], aligned with position t's prediction
        if self.fused_loss is not None and not return_outputs:  # evaluation wants logits: it takes the other path
            with body_only(model) as head:
                hidden = model(**inputs).logits  # [B, T, H]: the head is inside the loss
            outputs = None
            weight = head.weight
            terms = self.fused_loss.components(hidden.to(weight.dtype), weight, labels, answer_labels, head.bias)
        else:
            outputs = model(**inputs)  # no labels: the model computes no loss of its own
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
        for name, value in scaled.items():
            self._sums[name] = self._sums.get(name, 0.0) + value.detach().float()

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
