"""Training with the output head inside the loss (`FusedLinearCombinedLoss`): which models can, and the forward.

With ``fused_loss`` the model runs its body only and hands its final hidden states ``[B, T, H]`` to the loss, which
applies the head ``W [V, H]`` one chunk of rows at a time, so the ``[B, T, V]`` logits and their gradient never
exist. The head is swapped for an ``nn.Identity`` for the duration of one forward, through whatever wraps the model
(peft, DDP), so DDP still sees a normal forward and its gradient hooks (the head's weight included) still fire.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from segloss.losses import fused

# Config attributes of architectures whose logits are not ``hidden @ W.T + b`` (soft-capping, scaling).
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def _base_model(model: nn.Module) -> Any:
    while isinstance(getattr(model, "module", None), nn.Module):  # DDP / accelerate wrappers
        model = model.module  # type: ignore[assignment]
    get_base = getattr(model, "get_base_model", None)  # peft
    return get_base() if callable(get_base) else model


def fused_head_problem(model: nn.Module) -> str | None:
    """Why the head of ``model`` cannot move into the loss, or None when it can."""
    base = _base_model(model)
    head = base.get_output_embeddings() if callable(getattr(base, "get_output_embeddings", None)) else None
    if head is None:
        return "the model has no output head (get_output_embeddings() is None)"
    if type(head) is not nn.Linear:  # peft's lora.Linear is not an nn.Linear
        return f"its output head is a {type(head).__name__}, not a plain nn.Linear (does LoRA adapt lm_head?)"
    if not any(module is head for module in base.children()):
        return "its output head is not a direct child of the model, so the body cannot run without it"
    for attr in LOGIT_TRANSFORMS:
        value = getattr(base.config, attr, None)
        if value not in (None, 1, 1.0):
            return f"the model transforms its logits after the head ({attr}={value})"
    return None


def resolve_fused_loss(requested: bool | None, model: nn.Module, tokens_per_micro_batch: int) -> bool:
    """``requested`` if given (True on a model that cannot fuse raises ``ValueError``); None (automatic): on when the
    head can be fused and the micro-batch's logits (tokens × V) would be larger than one fused chunk."""
    problem = fused_head_problem(model)
    if requested is True and problem is not None:
        raise ValueError(
            f"fused_loss: cannot compute the output head inside the loss: {problem}; set fused_loss to "
            "false, or leave it unset to decide automatically"
        )
    if requested is not None:
        return requested
    if problem is not None:
        return False
    vocab = int(_base_model(model).get_output_embeddings().out_features)
    return tokens_per_micro_batch * vocab > fused.CHUNK_ELEMENTS


@contextmanager
def body_only(model: nn.Module) -> Iterator[nn.Linear]:
    """Inside the block ``model(**inputs).logits`` are the final hidden states ``[B, T, H]``; yields the head."""
    base = _base_model(model)
    head = base.get_output_embeddings()
    name = next(n for n, module in base.named_children() if module is head)
    setattr(base, name, nn.Identity())
    try:
        yield head
    finally:
        setattr(base, name, head)
