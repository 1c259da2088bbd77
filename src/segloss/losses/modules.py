"""Thin ``nn.Module`` wrappers, the name registry, and the combined objective.

The combined objective of the paper is ``L = λ·CE(labels) + (1 − λ)·L_task(answer_labels)`` (λ = 0.6): CE sees every
target token (prompt and answer), a task loss only the answer tokens. :class:`CombinedLoss` composes the single
losses with validated weights; nothing is re-derived.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from segloss.losses import core
from segloss.losses.functional import LOSSES, LossFn, evaluate_loss, reduce_values
from segloss.losses.table import (
    ALIASES,
    IGNORE_INDEX,
    LossDef,
    LossOptions,
    TableView,
    canonical_name,
    check_ignore_index,
    loss_def,
)

if TYPE_CHECKING:
    from segloss.losses.accumulate import StepShare

__all__ = [
    "ALIASES",
    "LOSSES",
    "LOSS_CLASSES",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "GeneralizedDiceLoss",
    "JaccardLoss",
    "LossFn",
    "LovaszSoftmaxLoss",
    "SelfAdjustingDiceLoss",
    "TokenLoss",
    "TverskyLoss",
    "canonical_name",
    "causal_shift",
    "get_loss",
    "validate_weights",
]

logger = logging.getLogger(__name__)


class TokenLoss(nn.Module):
    """A registered loss as a module: ``module(logits [B, T, V], labels [B, T]) -> scalar``.

    ``TokenLoss(name, **options)`` works for every registered name; the typed subclasses (``FocalLoss(gamma=…)`` …,
    one per loss, derived from the loss table) are what :func:`get_loss` returns and take the loss's options
    positionally or by keyword. ``config`` is the typed options dataclass; ``options`` holds those that differ
    from their defaults (``ignore_index`` is ``self.ignore_index``).
    """

    definition: ClassVar[LossDef | None] = None

    def __init__(self, *args: Any, ignore_index: int = IGNORE_INDEX, **options: Any) -> None:
        super().__init__()
        definition = type(self).definition
        if definition is None:  # the generic form: TokenLoss(name, **options)
            if not args or not isinstance(args[0], str):
                raise ValueError("TokenLoss needs a loss name first, e.g. TokenLoss('focal', gamma=1.0)")
            definition, args = loss_def(args[0]), args[1:]
        self.loss = definition
        self.name = definition.name
        self.ignore_index = check_ignore_index(definition.name, ignore_index)
        self.config: LossOptions = definition.make(*args, **options)
        # Only options that differ from the defaults: `FocalLoss()` and `get_loss("focal")` both have {}, so a
        # LossSpec (and config.yaml) records what the user chose, not every default.
        self.options = self.config.non_defaults()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return evaluate_loss(self.loss, self.config, logits, labels, self.ignore_index)

    def extra_repr(self) -> str:
        ignore = [] if self.ignore_index == IGNORE_INDEX else [f"ignore_index={self.ignore_index}"]
        return ", ".join([self.name] + [f"{k}={v!r}" for k, v in self.options.items()] + ignore)


def _module_class(definition: LossDef) -> type[TokenLoss]:
    """The typed module of a loss: its options as constructor arguments (defaults from the table)."""
    name = definition.class_name or "".join(part.title() for part in definition.name.split("_")) + "Loss"
    doc = f"{definition.title or name} (:func:`segloss.losses.{definition.function_name or definition.name}`)."
    cls = type(name, (TokenLoss,), {"definition": definition, "__doc__": doc, "__module__": __name__})
    fields = {f.name: f for f in dataclasses.fields(definition.options)}
    own = [n for n in definition.option_names if not fields[n].kw_only]
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=fields[n].default) for n in own
    ]
    keyword = [n for n in definition.option_names if n not in own] + ["ignore_index"]
    defaults = {**{n: f.default for n, f in fields.items()}, "ignore_index": IGNORE_INDEX}
    parameters += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=defaults[n]) for n in keyword]
    cls.__signature__ = inspect.Signature(parameters[1:])  # type: ignore[attr-defined]
    return cls


LOSS_CLASSES: TableView = TableView(_module_class)  # name → typed module class, for every registered loss

CrossEntropyLoss: type[TokenLoss] = LOSS_CLASSES["ce"]
FocalLoss: type[TokenLoss] = LOSS_CLASSES["focal"]
SelfAdjustingDiceLoss: type[TokenLoss] = LOSS_CLASSES["sadl"]
GeneralizedDiceLoss: type[TokenLoss] = LOSS_CLASSES["gdice"]
LovaszSoftmaxLoss: type[TokenLoss] = LOSS_CLASSES["lovasz"]
DiceLoss: type[TokenLoss] = LOSS_CLASSES["dice"]
JaccardLoss: type[TokenLoss] = LOSS_CLASSES["jaccard"]
TverskyLoss: type[TokenLoss] = LOSS_CLASSES["tversky"]
FocalTverskyLoss: type[TokenLoss] = LOSS_CLASSES["focal_tversky"]


def get_loss(name: str, **options: object) -> TokenLoss:
    """The typed loss module registered as ``name`` (see :data:`LOSSES`; aliases allowed), e.g.
    ``get_loss("focal", gamma=1.0)`` → ``FocalLoss(gamma=1.0)``. Unknown names or options raise ``ValueError``."""
    return LOSS_CLASSES[canonical_name(name)](**options)


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


def causal_shift(*label_tensors: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, ...]:
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
        ignore_index: int = IGNORE_INDEX,
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

    def definitions(self) -> dict[str, tuple[LossDef, Any]]:
        """Each computed (weighted) loss: its table entry and its typed options."""
        losses: dict[str, TokenLoss] = dict(self.losses.items())  # type: ignore[arg-type]
        return {name: (loss.loss, loss.config) for name, loss in losses.items()}

    @property
    def batch_losses(self) -> list[str]:
        """The region losses with ``group: batch`` (their statistics span the whole optimizer step)."""
        return [n for n, (d, o) in self.definitions().items() if d.kind == "region" and o.group == "batch"]

    def gather_classes(self, vocab: int, device: torch.device, step: StepShare | None = None) -> torch.Tensor | None:
        """The classes the region losses read: every vocabulary entry when one counts them all (``classes: all``
        where it needs them), the optimizer step's present classes under accumulation, else those present."""
        if any(d.reads_all_classes(o) for d, o in self.definitions().values()):
            return torch.arange(vocab, device=device)
        return None if step is None else step.classes

    def label_sets(
        self, labels: torch.Tensor, answer_labels: torch.Tensor
    ) -> tuple[list[tuple[torch.Tensor, bool]], list[str]]:
        """What to gather: ``(labels, False)`` for CE and ``(answer_labels, reads classes)`` for the rest."""
        task = [d for name, (d, _) in self.definitions().items() if name != "ce"]
        sets, names = ([(labels, False)], ["labels"]) if "ce" in self.losses else ([], [])
        if task:
            sets.append((answer_labels, any(d.kind == "region" for d in task)))
            names.append("answer_labels")
        return sets, names

    def terms(
        self, gathered: list[core.TokenProbs], zero: torch.Tensor, step: StepShare | None = None
    ) -> dict[str, torch.Tensor]:
        """The weighted terms and ``"total"`` from :meth:`label_sets`' gathered tokens (``zero``: an empty loss).

        ``step``: this micro-batch's place in an optimizer step (:class:`segloss.losses.accumulate.StepShare`);
        each term is then the micro-batch's share of the step's loss, so that the shares add up exactly.
        """
        terms = {}
        for name, (definition, options) in self.definitions().items():
            tokens = gathered[0] if name == "ce" else gathered[-1]
            if step is None:
                value = reduce_values(definition, options, *definition.values(tokens, options))
            else:
                value = step.term(name, definition, options, tokens)
            terms[name] = self.weights[name] * (value + zero)
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    def components(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        answer_labels: torch.Tensor,
        *,
        step: StepShare | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each weighted term ``w_k · L_k`` keyed by loss name, plus ``"total"`` (their sum)."""
        sets, names = self.label_sets(labels, answer_labels)
        classes = self.gather_classes(logits.shape[-1], labels.device, step)
        gathered = core.gather_token_probs(logits, sets, ignore_index=self.ignore_index, names=names, classes=classes)
        return self.terms(gathered, core.zero_like(logits), step)

    @torch.no_grad()
    def batch_statistics(
        self, logits: torch.Tensor, answer_labels: torch.Tensor, step: StepShare
    ) -> dict[str, tuple[torch.Tensor, ...]]:
        """The statistics of each ``group: batch`` loss on one micro-batch, over the step's classes (no gradient):
        what :class:`segloss.losses.accumulate.StepAccumulator` adds up before any backward."""
        classes = self.gather_classes(logits.shape[-1], answer_labels.device, step)
        sets = [(answer_labels, True)]
        (tokens,) = core.gather_token_probs(
            logits, sets, ignore_index=self.ignore_index, names=["answer_labels"], classes=classes
        )
        return self.statistics_of(tokens)

    def statistics_of(self, tokens: core.TokenProbs) -> dict[str, tuple[torch.Tensor, ...]]:
        """The batch-group losses' statistics of the gathered answer tokens (one group)."""
        group = torch.zeros_like(tokens.seq)
        out = {}
        for name in self.batch_losses:
            definition, options = self.definitions()[name]
            stats = definition.statistics_of(tokens, group, 1, options)
            out[name] = type(stats)(*(t.detach() for t in stats))
        return out

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, answer_labels: torch.Tensor) -> torch.Tensor:
        return self.components(logits, labels, answer_labels)["total"]


def _log_effective_weights(weights: Mapping[str, float]) -> None:
    total = sum(weights.values())
    listed = ", ".join(f"{name}={w:g}" for name, w in weights.items())
    note = "" if math.isclose(total, 1.0, rel_tol=1e-9) else f" (they sum to {total:g}, not 1: the loss is scaled)"
    logger.info("combined loss: effective weights %s%s", listed, note)
