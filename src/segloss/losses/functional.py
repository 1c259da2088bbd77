"""Token-level segmentation losses over the vocabulary, as pure functions (derived from the loss table).

Every answer token is a "pixel" and every vocabulary entry a "class". All functions share one contract:

* ``logits``: ``[B, T, V]`` float tensor, **already aligned** with ``labels`` (position ``t`` predicts
  ``labels[:, t]``; see :func:`segloss.losses.causal_shift`). float16/bfloat16 are computed in float32;
  float32 and float64 keep their precision.
* ``labels``: ``[B, T]`` integer tensor; positions equal to ``ignore_index`` (default −100) are **dropped**: they
  never enter a loss's value or gradient.
* Returns a scalar tensor. When no position is valid the loss is exactly 0 with a zero gradient (never NaN).

Each function is built from its entry in :mod:`segloss.losses.table` (options, defaults and checks written once);
the computation is :mod:`segloss.losses.core`. ``LOSSES`` maps every registered name to its function.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import torch

from segloss.losses import core
from segloss.losses.core import (
    IGNORE_INDEX,
    GatherPlan,
    RegionStats,
    TokenProbs,
    gather_token_probs,
    plan_gather,
    region_stats,
    token_probs_from,
)
from segloss.losses.table import LossDef, LossOptions, TableView, check_ignore_index

LossFn = Callable[..., torch.Tensor]
# Re-exported: the gather and the statistics live in core.py; the public functions are built below.
__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "GatherPlan",
    "LossFn",
    "RegionStats",
    "TokenProbs",
    "cross_entropy",
    "dice_loss",
    "evaluate_loss",
    "focal_loss",
    "focal_tversky_loss",
    "gather_token_probs",
    "generalized_dice_loss",
    "jaccard_loss",
    "lovasz_softmax_loss",
    "plan_gather",
    "reduce_values",
    "region_stats",
    "self_adjusting_dice_loss",
    "token_probs_from",
    "tversky_loss",
]


def reduce_values(definition: LossDef, options: Any, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """One call's value of a loss from its per-unit values: the mean over tokens (or their sum), or the mean over
    the groups with a valid token."""
    if definition.kind == "token" and options.reduction == "sum":
        return values.sum()
    kept = torch.where(valid, values, torch.zeros_like(values))  # groups without a valid token do not count
    return kept.sum() / valid.to(values.dtype).sum().clamp_min(1)


def evaluate_loss(
    definition: LossDef, options: LossOptions, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """The value of one loss on ``logits [B, T, V]`` and ``labels [B, T]`` (the body of every public function)."""
    logits, labels = core.check_inputs(logits, labels)
    classes = torch.arange(logits.shape[-1], device=labels.device) if definition.reads_all_classes(options) else None
    sets = [(labels, definition.kind == "region")]
    (tokens,) = gather_token_probs(logits, sets, ignore_index=ignore_index, classes=classes)
    return reduce_values(definition, options, *definition.values(tokens, options))


def _function(definition: LossDef) -> LossFn:
    # Built once: a call with the default options builds no options object (torch.compile traces it as a constant;
    # non-default options are validated per call, in eager code — compile a module such as FocalLoss(gamma=1.0)).
    defaults = definition.make()

    def loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX, **options: Any):
        check_ignore_index(definition.name, ignore_index)
        config = definition.make(**options) if options else defaults
        return evaluate_loss(definition, config, logits, labels, ignore_index)

    tensor = inspect.Parameter.POSITIONAL_OR_KEYWORD
    keyword = inspect.Parameter.KEYWORD_ONLY
    fields = {f.name: f for f in dataclasses.fields(definition.options)}
    parameters = [inspect.Parameter("logits", tensor), inspect.Parameter("labels", tensor)]
    parameters += [inspect.Parameter(n, keyword, default=fields[n].default) for n in definition.option_names]
    parameters.append(inspect.Parameter("ignore_index", keyword, default=IGNORE_INDEX))
    loss.__signature__ = inspect.Signature(parameters, return_annotation=torch.Tensor)  # type: ignore[attr-defined]
    loss.__name__ = loss.__qualname__ = definition.function_name or f"{definition.name}_loss"
    loss.__module__ = __name__
    loss.__doc__ = definition.doc or definition.title
    return loss


LOSSES: TableView = TableView(_function)  # name → public function, for every registered loss

cross_entropy: LossFn = LOSSES["ce"]
focal_loss: LossFn = LOSSES["focal"]
self_adjusting_dice_loss: LossFn = LOSSES["sadl"]
generalized_dice_loss: LossFn = LOSSES["gdice"]
lovasz_softmax_loss: LossFn = LOSSES["lovasz"]
dice_loss: LossFn = LOSSES["dice"]
jaccard_loss: LossFn = LOSSES["jaccard"]
tversky_loss: LossFn = LOSSES["tversky"]
focal_tversky_loss: LossFn = LOSSES["focal_tversky"]
