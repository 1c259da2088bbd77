"""`SeglossSFTTrainer`: TRL's `SFTTrainer` optimising λ·CE(all tokens) + (1 − λ)·task loss(completion tokens).

    from trl import SFTConfig
    from segloss.integrations.trl import SeglossSFTTrainer

    trainer = SeglossSFTTrainer(
        model="path/or/hub-id",
        args=SFTConfig(output_dir="runs/sft", gradient_accumulation_steps=4),
        train_dataset=dataset,            # {"prompt", "completion"} rows, plain text or conversational
        loss="lovasz", ce_weight=0.6,     # or loss=LossSpec.parse(...); loss_options={"focal": {"gamma": 2}}
    )
    trainer.train()

TRL tokenizes and collates as usual (chat templates, truncation, padding-free batches); its ``completion_mask`` —
the completion tokens of a prompt-completion row — is the answer mask of the task loss, and CE covers every token
of the sequence (the paper's objective). ``completion_only_loss=True`` in the `SFTConfig` restricts CE to the
completion tokens too; ``assistant_only_loss=True`` restricts both to the assistant turns, as TRL does. Rows without
a completion (language-modeling or ``messages`` datasets) use TRL's labels for both terms.

The loss, its exact gradient accumulation and DDP (every loss; docs/losses.md "Properties") and the
``ce``/``task``/``total`` logs are `segloss.training.CombinedLossMixin`, the same code `SeglossTrainer` runs. With
``padding_free=True`` a packed row counts as one sequence for ``group: sequence`` region losses: not exact, and said
so by a warning when training starts. Not supported: ``packing=True`` (TRL's
packing keeps only input ids and labels, so the completion mask would be lost) and vision-language datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from trl import SFTTrainer

from segloss.defaults import DEFAULT_CE_WEIGHT
from segloss.losses import IGNORE_INDEX, LossSpec
from segloss.training.trainer import CombinedLossMixin

__all__ = ["CompletionMaskCollator", "SeglossSFTTrainer"]


class CompletionMaskCollator:
    """Wraps a TRL collator so that every batch also carries ``completion_mask [B, T]`` (0 on prompt and padding).

    TRL's own collator drops the column. The mask is cut like TRL cut the input ids (``truncation_mode``) and laid
    out like them: right-padded rows, or one concatenated row for padding-free batches.
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]], truncation_mode: str) -> None:
        self.collator = collator
        self.keep_end = truncation_mode == "keep_end"

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        masks = [example["completion_mask"] for example in examples if "completion_mask" in example]
        batch = self.collator([{k: v for k, v in ex.items() if k != "completion_mask"} for ex in examples])
        if "completion_mask" in batch or len(masks) != len(examples):
            return batch
        cut = [self._cut(list(mask), len(ex["input_ids"])) for mask, ex in zip(masks, examples, strict=True)]
        rows = cut if batch["input_ids"].shape[0] == len(examples) else [[bit for mask in cut for bit in mask]]
        out = torch.zeros_like(batch["input_ids"])  # [B, T] (padding-free: [1, total tokens])
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=out.dtype)
        batch["completion_mask"] = out
        return batch

    def _cut(self, mask: list[int], length: int) -> list[int]:
        return mask[len(mask) - length :] if self.keep_end else mask[:length]


class SeglossSFTTrainer(CombinedLossMixin, SFTTrainer):  # type: ignore[misc]  # TRL types the GA flag as None
    """TRL `SFTTrainer` whose loss is a segloss `CombinedLoss` (see the module docstring).

    Args:
        loss: a task loss name combined with CE by ``ce_weight`` (``"lovasz"``), ``"ce"``, a weights string
            (``"ce=0.5,focal=0.5"``), a mapping, or a `LossSpec`.
        ce_weight: λ, the CE weight when ``loss`` is one task loss name (0.6, the paper's value).
        loss_options: options per loss, e.g. ``{"focal": {"gamma": 2.0}}``.
        *args, **kwargs: everything `SFTTrainer` takes (``compute_loss_func`` excepted: the loss is segloss's).
    """

    def __init__(
        self,
        *args: Any,
        loss: str | Mapping[str, float] | LossSpec = "lovasz",
        ce_weight: float | None = DEFAULT_CE_WEIGHT,
        loss_options: Mapping[str, Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("compute_loss_func: SeglossSFTTrainer computes the loss itself; set loss= instead")
        config = kwargs.get("args", args[1] if len(args) > 1 else None)
        if getattr(config, "packing", False):
            raise ValueError("packing: TRL's packing drops the completion mask the task loss needs; set packing=False")
        self.loss_spec = LossSpec.parse(loss, ce_weight=ce_weight, options=loss_options)
        # completion_only_loss=True: CE on the completion only; unset or False: CE on every token (the paper's).
        self._ce_on_completion_only = getattr(config, "completion_only_loss", None) is True
        super().__init__(*args, combined_loss=self.loss_spec.build(), **kwargs)
        self.data_collator = CompletionMaskCollator(self.data_collator, getattr(self.args, "truncation_mode", ""))

    def _prepare_dataset(self, *args: Any, **kwargs: Any) -> Any:
        # TRL folds completion_mask into the labels (and drops it) when completion_only_loss is on; keep the labels
        # on every token and the mask as a column, for loss_targets to split.
        completion_only, self.completion_only_loss = self.completion_only_loss, False
        try:
            return super()._prepare_dataset(*args, **kwargs)
        finally:
            self.completion_only_loss = completion_only

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and "completion_mask" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "completion_mask"]

    def loss_targets(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = inputs["labels"]  # every token TRL trains on (assistant turns only with assistant_only_loss)
        mask = inputs.get("completion_mask")
        answer = labels if mask is None else labels.masked_fill(mask == 0, IGNORE_INDEX)
        return (answer if self._ce_on_completion_only else labels), answer

    def model_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in inputs.items() if k not in ("labels", "completion_mask")}
        return {**kept, "use_cache": False}  # as SFTTrainer: no KV cache in training (checkpointing needs it off)
