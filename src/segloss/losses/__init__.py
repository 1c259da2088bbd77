"""Token-level segmentation losses over the vocabulary and the combined objective.

>>> from segloss.losses import LossSpec, causal_shift
>>> loss_fn = LossSpec.parse("lovasz", ce_weight=0.6).build()   # CombinedLoss: 0.6·CE + 0.4·Lovász
>>> labels, answer_labels = causal_shift(batch["labels"], batch["answer_labels"])
>>> loss = loss_fn(model(**inputs).logits, labels, answer_labels)

Without the ``[B, T, V]`` logits (the model's body gives ``hidden [B, T, H]``, the head ``W [V, H]``):

>>> loss = fused_linear_loss(hidden, lm_head.weight, labels, answer_labels, weights={"ce": 0.6, "lovasz": 0.4})
"""

from segloss.defaults import DEFAULT_CE_WEIGHT
from segloss.losses.accumulate import StepAccumulator, StepShare
from segloss.losses.functional import (
    IGNORE_INDEX,
    cross_entropy,
    dice_loss,
    focal_loss,
    focal_tversky_loss,
    generalized_dice_loss,
    jaccard_loss,
    lovasz_softmax_loss,
    self_adjusting_dice_loss,
    tversky_loss,
)
from segloss.losses.fused import FusedLinearCombinedLoss, fused_linear_loss
from segloss.losses.modules import (
    ALIASES,
    LOSS_CLASSES,
    LOSSES,
    CombinedLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    LovaszSoftmaxLoss,
    SelfAdjustingDiceLoss,
    TokenLoss,
    TverskyLoss,
    canonical_name,
    causal_shift,
    get_loss,
    validate_weights,
)
from segloss.losses.spec import LossSpec, parse_loss_spec
from segloss.losses.table import (
    LOSS_TABLE,
    LossDef,
    LossOptions,
    RegionOptions,
    TokenOptions,
    option,
    register_loss,
    unregister_loss,
)

__all__ = [
    "ALIASES",
    "DEFAULT_CE_WEIGHT",
    "IGNORE_INDEX",
    "LOSSES",
    "LOSS_CLASSES",
    "LOSS_TABLE",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "FusedLinearCombinedLoss",
    "GeneralizedDiceLoss",
    "JaccardLoss",
    "LossDef",
    "LossOptions",
    "LossSpec",
    "LovaszSoftmaxLoss",
    "RegionOptions",
    "SelfAdjustingDiceLoss",
    "StepAccumulator",
    "StepShare",
    "TokenLoss",
    "TokenOptions",
    "TverskyLoss",
    "canonical_name",
    "causal_shift",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "focal_tversky_loss",
    "fused_linear_loss",
    "generalized_dice_loss",
    "get_loss",
    "jaccard_loss",
    "lovasz_softmax_loss",
    "option",
    "parse_loss_spec",
    "register_loss",
    "self_adjusting_dice_loss",
    "tversky_loss",
    "unregister_loss",
    "validate_weights",
]
