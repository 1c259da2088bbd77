"""Thin ``nn.Module`` wrappers, the name registry, and the combined objective.

The combined objective of the paper is ``L = λ·CE(labels) + (1 − λ)·L_task(answer_labels)`` (λ = 0.6): CE sees every
target token (prompt and answer), a task loss only the answer tokens. :class:`CombinedLoss` composes the single
losses with validated weights; nothing is re-derived.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from segloss.losses import functional as LF

LossFn = Callable[..., torch.Tensor]
Reduction = Literal["mean", "sum"]
WType = Literal["square", "simple", "uniform"]
logger = logging.getLogger(__name__)

LOSSES: dict[str, LossFn] = {
    "ce": LF.cross_entropy,
    "focal": LF.focal_loss,
    "gdice": LF.generalized_dice_loss,
    "sadl": LF.self_adjusting_dice_loss,
    "lovasz": LF.lovasz_softmax_loss,
    "dice": LF.dice_loss,
    "jaccard": LF.jaccard_loss,
    "tversky": LF.tversky_loss,
    "focal_tversky": LF.focal_tversky_loss,
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


def _keyword_options(fn: Callable[..., object]) -> list[str]:
    params = inspect.signature(fn).parameters.items()
    return [p for p, spec in params if spec.kind in (spec.KEYWORD_ONLY, spec.POSITIONAL_OR_KEYWORD) and p != "self"]


def _validate_options(name: str, fn: LossFn, options: Mapping[str, object]) -> dict[str, object]:
    allowed = [p for p, spec in inspect.signature(fn).parameters.items() if spec.kind is spec.KEYWORD_ONLY]
    checked: dict[str, object] = {}
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(f"loss {name!r} has no option {key!r}; valid options: {', '.join(allowed)}")
        checked[key] = LF.check_option(name, key, value)
    return checked


class TokenLoss(nn.Module):
    """A registered loss as a module: ``module(logits [B, T, V], labels [B, T]) -> scalar``.

    ``TokenLoss(name, **options)`` works for every registered name; the typed subclasses below (``FocalLoss(gamma=…)``
    …) are what :func:`get_loss` returns. ``options`` holds the loss's options that differ from their defaults
    (``ignore_index`` is ``self.ignore_index``).
    """

    def __init__(self, name: str, **options: object) -> None:
        super().__init__()
        self.name = canonical_name(name)
        self.fn = LOSSES[self.name]
        checked = _validate_options(self.name, self.fn, options)
        self.ignore_index = int(checked.pop("ignore_index", LF.IGNORE_INDEX))  # type: ignore[call-overload]
        # Only options that differ from the function's defaults: `FocalLoss()` and `get_loss("focal")` both have
        # {}, so a LossSpec (and config.yaml) records what the user chose, not every default.
        defaults = {p: spec.default for p, spec in inspect.signature(self.fn).parameters.items()}
        self.options = {key: value for key, value in checked.items() if value != defaults.get(key)}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, labels, ignore_index=self.ignore_index, **self.options)

    def extra_repr(self) -> str:
        ignore = [] if self.ignore_index == LF.IGNORE_INDEX else [f"ignore_index={self.ignore_index}"]
        return ", ".join([self.name] + [f"{k}={v!r}" for k, v in self.options.items()] + ignore)


class CrossEntropyLoss(TokenLoss):
    """Cross-entropy over the valid tokens (:func:`segloss.losses.cross_entropy`)."""

    def __init__(self, *, reduction: Reduction = "mean", ignore_index: int = LF.IGNORE_INDEX) -> None:
        super().__init__("ce", reduction=reduction, ignore_index=ignore_index)


class FocalLoss(TokenLoss):
    """Focal loss (:func:`segloss.losses.focal_loss`); ``gamma=0`` is cross-entropy."""

    def __init__(self, gamma: float = 2.0, *, reduction: Reduction = "mean", ignore_index: int = LF.IGNORE_INDEX):
        super().__init__("focal", gamma=gamma, reduction=reduction, ignore_index=ignore_index)


class SelfAdjustingDiceLoss(TokenLoss):
    """Self-adjusting Dice loss (:func:`segloss.losses.self_adjusting_dice_loss`)."""

    def __init__(
        self,
        alpha: float = 1.0,
        gamma: float = 1.0,
        *,
        reduction: Reduction = "mean",
        ignore_index: int = LF.IGNORE_INDEX,
    ) -> None:
        super().__init__("sadl", alpha=alpha, gamma=gamma, reduction=reduction, ignore_index=ignore_index)


class GeneralizedDiceLoss(TokenLoss):
    """Generalized Dice loss per sequence (:func:`segloss.losses.generalized_dice_loss`)."""

    def __init__(
        self,
        smooth: float = 1e-5,
        w_type: WType = "square",
        *,
        reduction: Literal["mean"] = "mean",
        ignore_index: int = LF.IGNORE_INDEX,
    ) -> None:
        super().__init__("gdice", smooth=smooth, w_type=w_type, reduction=reduction, ignore_index=ignore_index)


class LovaszSoftmaxLoss(TokenLoss):
    """Lovász-Softmax over the valid tokens of the batch (:func:`segloss.losses.lovasz_softmax_loss`)."""

    def __init__(self, *, reduction: Literal["mean"] = "mean", ignore_index: int = LF.IGNORE_INDEX) -> None:
        super().__init__("lovasz", reduction=reduction, ignore_index=ignore_index)


class DiceLoss(TokenLoss):
    """Soft Dice per sequence and present class (:func:`segloss.losses.dice_loss`)."""

    def __init__(
        self, smooth: float = 1e-5, *, reduction: Literal["mean"] = "mean", ignore_index: int = LF.IGNORE_INDEX
    ) -> None:
        super().__init__("dice", smooth=smooth, reduction=reduction, ignore_index=ignore_index)


class JaccardLoss(TokenLoss):
    """Soft Jaccard (IoU) per sequence and present class (:func:`segloss.losses.jaccard_loss`)."""

    def __init__(
        self, smooth: float = 1e-5, *, reduction: Literal["mean"] = "mean", ignore_index: int = LF.IGNORE_INDEX
    ) -> None:
        super().__init__("jaccard", smooth=smooth, reduction=reduction, ignore_index=ignore_index)


class TverskyLoss(TokenLoss):
    """Tversky loss, α on false positives and β on false negatives (:func:`segloss.losses.tversky_loss`)."""

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        smooth: float = 1e-5,
        *,
        reduction: Literal["mean"] = "mean",
        ignore_index: int = LF.IGNORE_INDEX,
    ) -> None:
        options = {"alpha": alpha, "beta": beta, "smooth": smooth, "reduction": reduction}
        super().__init__("tversky", ignore_index=ignore_index, **options)


class FocalTverskyLoss(TokenLoss):
    """Focal Tversky loss ``(1 − TI)^γ`` (:func:`segloss.losses.focal_tversky_loss`)."""

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 0.75,
        smooth: float = 1e-5,
        *,
        reduction: Literal["mean"] = "mean",
        ignore_index: int = LF.IGNORE_INDEX,
    ) -> None:
        options = {"alpha": alpha, "beta": beta, "gamma": gamma, "smooth": smooth, "reduction": reduction}
        super().__init__("focal_tversky", ignore_index=ignore_index, **options)


LOSS_CLASSES: dict[str, type[TokenLoss]] = {
    "ce": CrossEntropyLoss,
    "focal": FocalLoss,
    "gdice": GeneralizedDiceLoss,
    "sadl": SelfAdjustingDiceLoss,
    "lovasz": LovaszSoftmaxLoss,
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
}


def get_loss(name: str, **options: object) -> TokenLoss:
    """The typed loss module registered as ``name`` (see :data:`LOSSES`; aliases allowed), e.g.
    ``get_loss("focal", gamma=1.0)`` → ``FocalLoss(gamma=1.0)``. Unknown names or options raise ``ValueError``."""
    key = canonical_name(name)
    cls = LOSS_CLASSES[key]
    allowed = _keyword_options(cls.__init__)
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise ValueError(f"loss {key!r} has no option {unknown[0]!r}; valid options: {', '.join(allowed)}")
    return cls(**options)  # type: ignore[arg-type]


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
            Weights need not sum to 1 (a user's choice: the sum scales the loss and so the effective learning
            rate); the effective weights are logged at INFO, with a note when they do not sum to 1.
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
        _log_effective_weights(self.weights)

    def label_sets(
        self, labels: torch.Tensor, answer_labels: torch.Tensor
    ) -> tuple[list[tuple[torch.Tensor, bool]], list[str]]:
        """What to gather: ``(labels, False)`` for CE and ``(answer_labels, needs present classes)`` for the rest."""
        task = [name for name in self.losses if name != "ce"]
        sets, names = ([(labels, False)], ["labels"]) if "ce" in self.losses else ([], [])
        if task:
            sets.append((answer_labels, any(LF.CORES[name][1] for name in task)))
            names.append("answer_labels")
        return sets, names

    def terms(self, gathered: list[LF.TokenProbs | None], zero: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted terms and ``"total"`` from :meth:`label_sets`' gathered tokens (``zero``: an empty loss)."""
        terms = {}
        for name, loss in self.losses.items():
            tokens = gathered[0] if name == "ce" else gathered[-1]
            options: dict[str, object] = loss.options  # type: ignore[assignment]
            value = zero if tokens is None else LF.CORES[name][0](tokens, **options)
            terms[name] = self.weights[name] * value
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    def components(
        self, logits: torch.Tensor, labels: torch.Tensor, answer_labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Each weighted term ``w_k · L_k`` keyed by loss name, plus ``"total"`` (their sum)."""
        sets, names = self.label_sets(labels, answer_labels)
        gathered = LF.gather_token_probs(logits, sets, ignore_index=self.ignore_index, names=names)
        return self.terms(gathered, LF._zero(logits))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, answer_labels: torch.Tensor) -> torch.Tensor:
        return self.components(logits, labels, answer_labels)["total"]


def _log_effective_weights(weights: Mapping[str, float]) -> None:
    total = sum(weights.values())
    listed = ", ".join(f"{name}={w:g}" for name, w in weights.items())
    note = "" if math.isclose(total, 1.0, rel_tol=1e-9) else f" (they sum to {total:g}, not 1: the loss is scaled)"
    logger.info("combined loss: effective weights %s%s", listed, note)
