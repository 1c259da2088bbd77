"""Thin ``nn.Module`` wrappers, the name registry, and the combined objective.

The combined objective of the paper is ``L = λ·CE(labels) + (1 − λ)·L_task(answer_labels)`` (λ = 0.6): CE sees every
target token (prompt and answer), a task loss only the answer tokens. :class:`CombinedLoss` composes the single
losses with validated weights; nothing is re-derived.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from segloss.losses import functional as LF

LossFn = Callable[..., torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "ce": LF.cross_entropy,
    "focal": LF.focal_loss,
    "gdice": LF.generalized_dice_loss,
    "sadl": LF.self_adjusting_dice_loss,
    "lovasz": LF.lovasz_softmax_loss,
}
# Names used by the original research code's configs.
ALIASES: dict[str, str] = {"cross_entropy": "ce", "self_adj_dice": "sadl"}


def canonical_name(name: str) -> str:
    """The registry name for ``name`` or an alias of it; unknown names raise ``ValueError`` listing valid ones."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in LOSSES:
        valid = sorted(LOSSES) + sorted(ALIASES)
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(valid)}")
    return key


def _validate_options(name: str, fn: LossFn, options: Mapping[str, object]) -> dict[str, object]:
    allowed = [p for p, spec in inspect.signature(fn).parameters.items() if spec.kind is spec.KEYWORD_ONLY]
    checked: dict[str, object] = {}
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(f"loss {name!r} has no option {key!r}; valid options: {', '.join(allowed)}")
        checked[key] = LF.check_option(name, key, value)
    return checked


class TokenLoss(nn.Module):
    """A registered loss as a module: ``module(logits [B, T, V], labels [B, T]) -> scalar``."""

    def __init__(self, name: str, **options: object) -> None:
        super().__init__()
        self.name = canonical_name(name)
        self.fn = LOSSES[self.name]
        self.options = _validate_options(self.name, self.fn, options)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, labels, **self.options)

    def extra_repr(self) -> str:
        return ", ".join([self.name] + [f"{k}={v}" for k, v in self.options.items()])


def get_loss(name: str, **options: object) -> TokenLoss:
    """The loss registered as ``name`` (``ce``, ``focal``, ``gdice``, ``sadl``, ``lovasz`` or an alias)."""
    return TokenLoss(name, **options)


def validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Canonical names → weights; each finite and ≥ 0, at least one > 0."""
    if not weights:
        raise ValueError("loss weights are empty; give at least one loss, e.g. {'ce': 0.6, 'lovasz': 0.4}")
    checked: dict[str, float] = {}
    for name, weight in weights.items():
        key = canonical_name(name)
        if key in checked:
            raise ValueError(f"loss {key!r} appears twice in the weights {dict(weights)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"weight of loss {name!r} must be a finite number, got {weight!r}")
        if weight < 0:
            raise ValueError(f"weight of loss {name!r} must be ≥ 0, got {weight}")
        checked[key] = float(weight)
    if not any(w > 0 for w in checked.values()):
        raise ValueError(f"all loss weights are zero in {dict(weights)}; give at least one positive weight")
    return checked


def causal_shift(*label_tensors: torch.Tensor, ignore_index: int = LF.IGNORE_INDEX) -> tuple[torch.Tensor, ...]:
    """Align labels with next-token logits: ``out[:, t] = labels[:, t + 1]``, last position ``ignore_index``.

    A causal LM's logits at position t predict token t + 1. Shifting the labels (not slicing the logits) keeps the
    ``[B, T, V]`` logits untouched, so no copy of them is made. Call it once, where the model output meets the loss.
    """
    return tuple(F.pad(labels[:, 1:], (0, 1), value=ignore_index) for labels in label_tensors)


class CombinedLoss(nn.Module):
    """``Σ_k w_k · L_k``: CE on ``labels`` (prompt + answer), every task loss on ``answer_labels`` (answer only).

    Args:
        weights: loss name → non-negative weight, e.g. ``{"ce": 0.6, "lovasz": 0.4}`` (see ``LossSpec``).
        options: optional loss name → keyword options, e.g. ``{"focal": {"gamma": 1.0}}``.
        ignore_index: label value of positions that no loss sees.

    Called as ``combined(logits [B, T, V], labels [B, T], answer_labels [B, T]) -> scalar``; the inputs must be
    aligned already (:func:`causal_shift`). Each term is exactly its single loss (the same core function); the
    log-softmax of each row is computed once for all of them. Zero-weight losses are not computed.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        options: Mapping[str, Mapping[str, object]] | None = None,
        *,
        ignore_index: int = LF.IGNORE_INDEX,
    ):
        super().__init__()
        self.weights = validate_weights(weights)
        self.ignore_index = ignore_index
        options = {canonical_name(k): dict(v) for k, v in (options or {}).items()}
        unused = sorted(set(options) - set(self.weights))
        if unused:
            raise ValueError(f"options given for loss(es) {unused} without a weight; weighted: {list(self.weights)}")
        if any("ignore_index" in o for o in options.values()):
            raise ValueError("set ignore_index on CombinedLoss itself, not per loss: every term sees the same masks")
        self.losses = nn.ModuleDict(
            {name: get_loss(name, **options.get(name, {})) for name, w in self.weights.items() if w > 0}
        )

    def components(
        self, logits: torch.Tensor, labels: torch.Tensor, answer_labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Each weighted term ``w_k · L_k`` keyed by loss name, plus ``"total"`` (their sum)."""
        task = [name for name in self.losses if name != "ce"]
        label_sets = [(labels, False)] if "ce" in self.losses else []
        if task:
            label_sets.append((answer_labels, any(LF.CORES[name][1] for name in task)))
        gathered = LF.gather_token_probs(logits, label_sets, ignore_index=self.ignore_index)
        terms = {}
        for name, loss in self.losses.items():
            tokens = gathered[0] if name == "ce" else gathered[-1]
            value = LF._zero(logits) if tokens is None else LF.CORES[name][0](tokens, **cast(TokenLoss, loss).options)
            terms[name] = self.weights[name] * value
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, answer_labels: torch.Tensor) -> torch.Tensor:
        return self.components(logits, labels, answer_labels)["total"]
