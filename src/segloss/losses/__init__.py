"""Token-level segmentation losses over the vocabulary and the combined objective.

>>> from segloss.losses import LossSpec, causal_shift
>>> loss_fn = LossSpec.parse("lovasz", ce_weight=0.6).build()   # CombinedLoss: 0.6·CE + 0.4·Lovász
>>> labels, answer_labels = causal_shift(batch["labels"], batch["answer_labels"])
>>> loss = loss_fn(model(**inputs).logits, labels, answer_labels)
"""

from segloss.losses.functional import (
    IGNORE_INDEX,
    cross_entropy,
    focal_loss,
    generalized_dice_loss,
    lovasz_softmax_loss,
    self_adjusting_dice_loss,
)
from segloss.losses.modules import (
    ALIASES,
    LOSSES,
    CombinedLoss,
    TokenLoss,
    canonical_name,
    causal_shift,
    get_loss,
    validate_weights,
)
from segloss.losses.spec import LossSpec, parse_loss_spec

__all__ = [
    "ALIASES",
    "IGNORE_INDEX",
    "LOSSES",
    "CombinedLoss",
    "LossSpec",
    "TokenLoss",
    "canonical_name",
    "causal_shift",
    "cross_entropy",
    "focal_loss",
    "generalized_dice_loss",
    "get_loss",
    "lovasz_softmax_loss",
    "parse_loss_spec",
    "self_adjusting_dice_loss",
    "validate_weights",
]
