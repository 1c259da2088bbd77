"""`SeglossSFTTrainer`: TRL's `SFTTrainer` optimising λ·CE(all tokens) + (1 − λ)·task loss(completion tokens).

    from trl import SFTConfig
    from segloss.integrations.trl import SeglossSFTTrainer

    trainer = SeglossSFTTrainer(
        model="path/or/hub-id",
        args=SFTConfig(output_dir="runs/sft", gradient_accumulation_steps=4),
        train_dataset=dataset,            # {"prompt", "completion"} rows, plain text or conversational, or "messages"
        loss="lovasz", ce_weight=0.6,     # or loss=LossSpec.parse(...); loss_options={"focal": {"gamma": 2}}
    )
    trainer.train()

This is the trainer `segloss train` runs (`segloss.training.train`), on rows that `segloss.data.tokenize_examples`
tokenized with :func:`tokenize_rows` — TRL's own preparation. TRL tokenizes and collates as usual (chat templates,
truncation, padding-free batches); its ``completion_mask`` — the completion tokens of a prompt-completion row — is
the answer mask of the task loss, and CE covers every token of the sequence (the paper's objective).

Parity with TRL, and where segloss differs (said, not silent):

* ``completion_only_loss`` unset (None): TRL trains the completion only; segloss trains CE on every token and says so
  once when the trainer is built (a warning). ``completion_only_loss=True`` restricts CE to the completion, as in
  TRL; ``assistant_only_loss=True`` restricts both terms to the assistant turns, as TRL does.
* ``messages`` rows become conversational prompt/completion rows split before the last turn, which must be the
  assistant's (a `ValueError` names the row otherwise): the task loss sees the assistant's reply only, never a
  system or user token; CE sees every token. Earlier assistant turns of a multi-turn row are context (CE only).
* Logs: TRL's ``entropy``, ``mean_token_accuracy`` and ``num_tokens`` (computed as TRL computes them, on the CE
  targets; on the fused path from the hidden states, in chunks; entropy and accuracy on the logging steps'
  micro-batches only, where TRL averages every step) next to segloss's ``ce``/``task``/``total``;
  evaluation adds ``eval_ce`` and ``eval_task`` (the weighted terms) to ``eval_loss``.
* ``padding_free=True``: the concatenated row is split back into its sequences (TRL's position ids restart at 0 at
  each sequence) before the loss, so per-sequence region losses (gdice, dice, tversky… with ``group: sequence``)
  score each sequence as on a padded batch.

The loss, its exact gradient accumulation and DDP (every loss; docs/losses.md "Properties") and the
``ce``/``task``/``total`` logs are `segloss.training.CombinedLossMixin`, the same code `SeglossTrainer` runs. Not
supported: ``packing=True`` (TRL's packing keeps only input ids and labels, so the completion mask would be lost) and
vision-language datasets.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from segloss.defaults import DEFAULT_CE_WEIGHT
from segloss.losses import IGNORE_INDEX, LossSpec
from segloss.training.checkpoints import CheckpointLoadGuard
from segloss.training.trainer import CombinedLossMixin

logger = logging.getLogger("segloss.trl")

__all__ = ["CompletionMaskCollator", "SeglossSFTTrainer", "padding_collator", "tokenize_rows"]


def tokenize_rows(rows: Any, tokenizer: Any) -> Any:
    """TRL's tokenization of prompt/completion rows (text or conversational), outside a trainer: the
    ``datasets.Dataset`` of ``input_ids`` and ``completion_mask`` that `SFTTrainer` prepares from them, not truncated.

    It runs `SFTTrainer`'s own dataset preparation (EOS appended to text completions, chat templates applied to
    conversational rows, the completion starting where the tokens of prompt and prompt + completion diverge) with
    the settings that change nothing else: no truncation, packing, shuffling, formatting function or masks.
    """
    preparer = types.SimpleNamespace(_tokenizer=tokenizer, completion_only_loss=False, chat_template=None)
    settings = types.SimpleNamespace(
        dataset_num_proc=None,
        dataset_text_field="text",
        assistant_only_loss=False,
        max_length=None,
        truncation_mode="keep_start",
        shuffle_dataset=False,
    )
    prepared = SFTTrainer._prepare_dataset(preparer, rows, tokenizer, settings, False, None, "segloss")  # type: ignore[arg-type]
    return prepared.select_columns(["input_ids", "completion_mask"])


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


def messages_as_completions(dataset: Any) -> Any:
    """``messages`` rows (conversational language modeling) as conversational prompt/completion rows: the turns
    before the last one as the prompt, the last — the assistant's reply — as the completion, so the task loss sees
    the assistant's tokens only (CE still sees every token). Other datasets are returned as they are."""
    columns = getattr(dataset, "column_names", None) or []
    if "messages" not in columns or "prompt" in columns or "input_ids" in columns:
        return dataset

    def split(row: dict[str, Any], index: int) -> dict[str, Any]:
        messages = list(row["messages"])
        role = messages[-1].get("role") if messages else None
        if role != "assistant":
            raise ValueError(
                f"messages: row {index} ends with {'no turn' if role is None else f'a {role!r} turn'}; end each "
                "conversation with the assistant's reply, the completion the task loss trains on"
            )
        return {"prompt": messages[:-1], "completion": messages[-1:]}

    return dataset.map(split, with_indices=True, remove_columns=["messages"])


def unpack_sequences(tensor: torch.Tensor, position_ids: torch.Tensor, fill: float) -> torch.Tensor:
    """A padding-free row ``tensor [1, N, ...]`` as ``[S, L, ...]``, one sequence per row (L = the longest), right
    padded with ``fill``; sequences start where ``position_ids [1, N]`` is 0 (TRL's padding-free collator)."""
    total = position_ids.shape[1]
    starts = (position_ids[0] == 0).nonzero().flatten()  # [S]
    lengths = torch.diff(starts, append=starts.new_tensor([total]))  # [S]
    offsets = torch.arange(int(lengths.max()), device=tensor.device)  # [L]
    index = starts[:, None] + offsets[None, :]  # [S, L] flat positions
    valid = offsets[None, :] < lengths[:, None]  # [S, L]
    rows = tensor[0, index.clamp(max=total - 1)]  # [S, L, ...]
    return rows.masked_fill(~valid.view(*valid.shape, *([1] * (rows.dim() - 2))), fill)


@torch.no_grad()
def token_statistics(values: torch.Tensor, labels: torch.Tensor, head: Any = None) -> tuple[torch.Tensor, ...]:
    """``(entropy sum, correct, count)`` over the positions ``labels [B, T]`` targets (shifted): the entropy of the
    predicted distribution and whether its argmax is the target, from logits ``values [B, T, V]`` or hidden states
    ``[B, T, H]`` and the output ``head`` (applied in row chunks of at most 2^24 logits, as the fused loss does)."""
    valid = labels != IGNORE_INDEX
    rows, targets = values[valid], labels[valid]  # [N, V or H], [N]
    vocab = values.shape[-1] if head is None else head.weight.shape[0]
    chunk = max(1, 2**24 // vocab)
    entropy = torch.zeros((), device=values.device)
    correct = torch.zeros((), device=values.device, dtype=torch.long)
    for start in range(0, rows.shape[0], chunk):
        logits = rows[start : start + chunk]
        if head is not None:
            logits = torch.nn.functional.linear(logits, head.weight, head.bias)
        log_probs = logits.float().log_softmax(-1)  # [n, V]
        entropy += -(log_probs.exp() * log_probs).sum()
        correct += (log_probs.argmax(-1) == targets[start : start + chunk]).sum()
    return entropy, correct, torch.tensor(rows.shape[0], device=values.device)


def padding_collator(tokenizer: Any) -> CompletionMaskCollator:
    """The batches `SeglossSFTTrainer` trains on, for rows of :func:`tokenize_rows`: TRL's collator (right padding
    with the pad token, else EOS; ``labels`` = every token, -100 on padding) plus ``completion_mask``."""
    from segloss.data import pad_token_id

    return CompletionMaskCollator(DataCollatorForLanguageModeling(pad_token_id=pad_token_id(tokenizer)), "keep_start")


class SeglossSFTTrainer(CombinedLossMixin, CheckpointLoadGuard, SFTTrainer):  # type: ignore[misc]  # TRL types the GA flag as None
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
        columns = getattr(self.train_dataset, "column_names", None) or []
        if getattr(self.args, "completion_only_loss", None) is None and "completion_mask" in columns:
            logger.warning(
                "segloss trains CE on every token of prompt and completion (the paper's objective) and the task loss "
                "on the completion; TRL's SFTTrainer, with completion_only_loss unset, would train the completion "
                "only. Set completion_only_loss=True for CE on the completion only."
            )

    def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        # TRL folds completion_mask into the labels (and drops it) when completion_only_loss is on; keep the labels
        # on every token and the mask as a column, for loss_targets to split.
        completion_only, self.completion_only_loss = self.completion_only_loss, False
        try:
            return super()._prepare_dataset(messages_as_completions(dataset), *args, **kwargs)
        finally:
            self.completion_only_loss = completion_only

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and "completion_mask" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "completion_mask"]

    def loss_targets(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        # labels: every token TRL trains on (assistant turns only with assistant_only_loss)
        labels, answer = (self.sequence_rows(t, inputs, IGNORE_INDEX) for t in super().loss_targets(inputs))
        return (answer if self._ce_on_completion_only else labels), answer

    def sequence_rows(self, tensor: torch.Tensor, inputs: dict[str, Any], fill: float) -> torch.Tensor:
        # A padding-free batch is one row of concatenated sequences (no attention mask; position ids restart at 0
        # where a sequence starts): back to one sequence per row, so per-sequence losses see each sequence.
        if "position_ids" not in inputs or "attention_mask" in inputs:
            return tensor
        return unpack_sequences(tensor, inputs["position_ids"], fill)

    def observe(
        self,
        inputs: dict[str, Any],
        labels: torch.Tensor,
        terms: dict[str, torch.Tensor],
        values: torch.Tensor,
        head: Any,
    ) -> None:
        """TRL's metrics (entropy, mean_token_accuracy, num_tokens) as `SFTTrainer` logs them, and in evaluation
        the weighted ``ce`` and ``task`` terms (logged as ``eval_ce``/``eval_task``). In training, entropy and
        accuracy are computed on the micro-batches of the steps that log (they cost a pass over the vocabulary,
        5 % of a SmolLM2 step on the fused path); TRL averages them over every step since the last log."""
        mode = "train" if getattr(self.model, "training", False) else "eval"  # as SFTTrainer.log reads it
        metrics = self._metrics[mode]
        gather = self.accelerator.gather_for_metrics
        if mode == "eval" or self._step_logs():
            entropy, correct, count = (gather(v).sum() for v in token_statistics(values, labels, head))
            metrics["entropy"].append((entropy / count).item() if count > 0 else 0.0)
            metrics["mean_token_accuracy"].append((correct / count).item() if count > 0 else 0.0)
        if mode == "train":
            mask = inputs.get("attention_mask")
            local = (
                mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].shape[1], device=values.device)
            )
            self._total_train_tokens += int(gather(local).sum().item())
        metrics["num_tokens"] = [self._total_train_tokens]
        if mode == "eval":
            zero = values.new_zeros((), dtype=torch.float32)
            task = sum((v.detach().float() for n, v in terms.items() if n not in ("ce", "total")), zero)
            ce = terms["ce"].detach().float() if "ce" in terms else zero
            metrics["ce"].append(gather(ce.reshape(1)).mean().item())
            metrics["task"].append(gather(task.reshape(1)).mean().item())

    def _step_logs(self) -> bool:
        """Whether the optimizer step this micro-batch belongs to ends with a training log (logging by steps)."""
        if self.args.logging_strategy != "steps" or not self.state.logging_steps:
            return True
        step = self.state.global_step + 1  # global_step counts the steps already taken
        return step % self.state.logging_steps == 0 or (bool(self.args.logging_first_step) and step == 1)

    unpacks_padding_free = True  # sequence_rows: per-sequence losses stay per sequence on padding-free batches

    def model_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # as SFTTrainer: no KV cache in training (activation checkpointing needs it off)
        return {**super().model_inputs(inputs), "use_cache": False}
