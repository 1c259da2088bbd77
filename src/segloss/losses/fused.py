"""The output head and the combined loss in one step, without ever holding the ``[N, V]`` logits.

``fused_linear_loss(hidden, W, labels, answer_labels, weights=…)`` equals
``CombinedLoss(weights)(hidden @ W.T + b, labels, answer_labels)`` in value and in its gradients with respect to
``hidden``, ``W`` and ``b``, for every loss in the registry. It works because every loss is a core over a few
log-probabilities per valid token (see ``functional.py``), so three passes suffice:

1. **Plan (labels only).** The valid rows of ``labels`` and ``answer_labels``, each row's target(s), and the K
   classes present among the region losses' targets are known before any logit is computed.
2. **Forward, per chunk of C valid rows.** ``z = h W^T + b`` (``[C, V]``, in one reused buffer), and only ``log p``
   at the targets (``[C, S]``) and at the K present classes (``[C, K]``), and each row's log-sum-exp, are kept.
3. **Loss on the gathered values.** Every statistic a region loss needs — per-sequence sums ``n_c, I_c, P_c`` and the
   mass outside the present classes for the Dice family, Lovász's errors ``|[y_i = c] − p_i[c]|`` sorted per present
   class — is a function of those ``[N, K]`` probabilities, computed (and differentiated by autograd) exactly as on
   the materialised path, so the losses' values are the same functions of the same numbers.
4. **Backward, per chunk again.** With ``g_row [C, S]`` and ``g_shared [C, K]`` the gradients of the loss w.r.t. the
   gathered log-probabilities, ``∂L/∂z = scatter(g) − exp(z − lse) · Σ g`` is rebuilt from a recomputed ``z``; then
   ``∂L/∂h = (∂L/∂z) W``, ``∂L/∂W += (∂L/∂z)^T h``, ``∂L/∂b += Σ_rows ∂L/∂z``.

Memory beyond the inputs and their gradients: one reused ``[C, V]`` buffer and ``[N, K]`` gathered values; time: one
extra ``h W^T`` (the recomputation), i.e. 4 matmuls instead of 3.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from segloss.losses import functional as LF
from segloss.losses._gather import _compute_dtype
from segloss.losses.modules import CombinedLoss

# Default rows per chunk: a [C, V] float32 chunk of about this many elements (64 MiB).
_CHUNK_ELEMENTS = 1 << 24


def _chunk_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, buffer: torch.Tensor
) -> torch.Tensor:
    """``z = h W^T + b`` for the C rows of ``hidden``, written into ``buffer[:C]`` (compute dtype) and returned.

    One buffer serves every chunk, forward and backward: on CPU a fresh 64 MiB tensor per chunk costs page faults
    that take longer than the softmax itself. Half-precision heads compute z in their own dtype, as the model would.
    """
    out = buffer[: hidden.shape[0]]  # [C, V]
    if weight.dtype != out.dtype:
        return out.copy_(hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t()))
    return torch.mm(hidden, weight.t(), out=out) if bias is None else torch.addmm(bias, hidden, weight.t(), out=out)


class _LinearLogProbsAt(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden2d: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        rows: torch.Tensor,
        cols: torch.Tensor,
        shared: torch.Tensor,
        chunk: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # hidden2d [M, H]; weight [V, H]; rows [U] sorted distinct; cols [U, S]; shared [K].
        dtype = _compute_dtype(weight.dtype)
        buffer = hidden2d.new_empty((min(chunk, rows.numel()), weight.shape[0]), dtype=dtype)  # [C, V]
        per_row, per_shared, lse = [], [], []
        for start in range(0, rows.numel(), chunk):
            h = hidden2d.index_select(0, rows[start : start + chunk])  # [C, H]
            z = _chunk_logits(h, weight, bias, buffer)  # [C, V]
            # log p = (z − max) − log Σ exp(z − max), in place: only the values asked for are kept.
            row_max = z.amax(dim=-1, keepdim=True)  # [C, 1]
            z.sub_(row_max)
            picked_rows, picked_shared = z.gather(1, cols[start : start + chunk]), z.index_select(1, shared)
            log_sum = z.exp_().sum(dim=-1, keepdim=True).log_()  # [C, 1]
            per_row.append(picked_rows - log_sum)  # [C, S]
            per_shared.append(picked_shared - log_sum)  # [C, K]
            lse.append(row_max + log_sum)  # [C, 1]: softmax(z) = exp(z − lse) in backward
        ctx.save_for_backward(hidden2d, weight, bias, rows, cols, shared, torch.cat(lse))
        ctx.chunk, ctx.compute_dtype = chunk, dtype
        return torch.cat(per_row), torch.cat(per_shared)  # [U, S], [U, K]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows: torch.Tensor, grad_shared: torch.Tensor):
        hidden2d, weight, bias, rows, cols, shared, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        # Half-precision weights accumulate their gradient over chunks in float32, as one big matmul would.
        grad_h = hidden2d.new_zeros(hidden2d.shape) if need_h else None  # [M, H], 0 on rows outside the loss
        grad_w = weight.new_zeros(weight.shape, dtype=ctx.compute_dtype) if need_w else None  # [V, H]
        grad_b = weight.new_zeros(weight.shape[0], dtype=ctx.compute_dtype) if need_b else None  # [V]
        buffer = hidden2d.new_empty((min(ctx.chunk, rows.numel()), weight.shape[0]), dtype=ctx.compute_dtype)
        for start in range(0, rows.numel(), ctx.chunk):
            stop = start + ctx.chunk
            idx, g_rows, g_shared = rows[start:stop], grad_rows[start:stop], grad_shared[start:stop]
            h = hidden2d.index_select(0, idx)  # [C, H]
            # ∂L/∂z = scatter(g) − softmax(z) · Σ g, built in place in the buffer.
            grad_z = _chunk_logits(h, weight, bias, buffer).sub_(lse[start:stop]).exp_()  # [C, V] softmax
            grad_z.mul_(-(g_rows.sum(-1) + g_shared.sum(-1))[:, None])
            grad_z.scatter_add_(1, cols[start:stop], g_rows.to(grad_z.dtype))  # repeated classes accumulate
            grad_z.index_add_(1, shared, g_shared.to(grad_z.dtype))
            if grad_w is not None:
                grad_w.addmm_(grad_z.t(), h.to(grad_z.dtype))
            if grad_b is not None:
                grad_b += grad_z.sum(0)
            if grad_h is not None:
                grad_h.index_copy_(0, idx, (grad_z.to(weight.dtype) @ weight).to(grad_h.dtype))
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        grad_b = None if grad_b is None else grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None


def linear_log_probs_at(
    hidden2d: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rows: torch.Tensor,
    cols: torch.Tensor,
    shared: torch.Tensor | None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_softmax(hidden2d @ weight.T + bias)`` at ``(rows[i], cols[i, k])`` and ``(rows[i], shared[k])``,
    computed ``chunk_size`` rows at a time in forward and again in backward (``[U, S]``, ``[U, K]``)."""
    chunk = chunk_size if chunk_size is not None else max(1, _CHUNK_ELEMENTS // weight.shape[0])
    shared = cols.new_zeros(0) if shared is None else shared
    return _LinearLogProbsAt.apply(hidden2d, weight, bias, rows, cols, shared, chunk)


def _check_head(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if hidden.dim() != 3 or not hidden.is_floating_point():
        raise ValueError(f"hidden must be a float tensor [B, T, H], got {tuple(hidden.shape)} {hidden.dtype}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"lm_head_weight must have shape [V, H] with H = {hidden.shape[-1]} (hidden's last dim), "
            f"got {tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype:
        raise ValueError(f"lm_head_weight dtype {weight.dtype} differs from hidden's {hidden.dtype}; cast one of them")
    if bias is not None and (bias.shape != weight.shape[:1] or bias.dtype != weight.dtype):
        raise ValueError(
            f"lm_head_bias must have shape [V] = ({weight.shape[0]},) and dtype {weight.dtype}, "
            f"got {tuple(bias.shape)} {bias.dtype}"
        )


def _zero(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # Exactly 0 and attached to every input, so each gets a zero gradient (not None) when no token is valid.
    parts = [hidden, weight] + ([] if bias is None else [bias])
    return sum(p.reshape(-1)[:0].sum() for p in parts).to(_compute_dtype(weight.dtype))  # type: ignore[union-attr]


class FusedLinearCombinedLoss(nn.Module):
    """:class:`CombinedLoss` applied to ``hidden @ lm_head_weight.T + lm_head_bias`` without materialising the logits.

    Args are those of :class:`CombinedLoss`, plus ``chunk_size``: valid rows per chunk (default: a ``[C, V]`` chunk
    of about 16M elements). Called as ``fused(hidden [B, T, H], lm_head_weight [V, H], labels [B, T],
    answer_labels [B, T], lm_head_bias=None [V]) -> scalar``; labels aligned already (:func:`causal_shift`).
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        options: Mapping[str, Mapping[str, object]] | None = None,
        *,
        ignore_index: int = LF.IGNORE_INDEX,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive int (rows per chunk) or None, got {chunk_size!r}")
        self.combined = CombinedLoss(weights, options, ignore_index=ignore_index)
        self.chunk_size = chunk_size

    @classmethod
    def from_combined(cls, combined: CombinedLoss, *, chunk_size: int | None = None) -> FusedLinearCombinedLoss:
        """The fused form of an existing :class:`CombinedLoss` (same weights, options and ignore_index)."""
        fused = cls(combined.weights, ignore_index=combined.ignore_index, chunk_size=chunk_size)
        fused.combined = combined
        return fused

    @property
    def weights(self) -> dict[str, float]:
        return self.combined.weights

    def components(
        self,
        hidden: torch.Tensor,
        lm_head_weight: torch.Tensor,
        labels: torch.Tensor,
        answer_labels: torch.Tensor,
        lm_head_bias: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each weighted term and ``"total"``, as :meth:`CombinedLoss.components` on the logits would give."""
        _check_head(hidden, lm_head_weight, lm_head_bias)
        batch, seq_len, width = hidden.shape
        sets, names = self.combined.label_sets(labels, answer_labels)
        shape_only = hidden.new_empty((batch, seq_len, lm_head_weight.shape[0]), device="meta")  # for the checks
        for (set_labels, _), name in zip(sets, names, strict=True):
            LF._check_inputs(shape_only, set_labels, name)
        plan = LF.plan_gather(tuple(shape_only.shape), sets, ignore_index=self.combined.ignore_index, names=names)  # type: ignore[arg-type]
        zero = _zero(hidden, lm_head_weight, lm_head_bias)
        if plan.rows.numel() == 0:
            return self.combined.terms([None] * len(sets), zero)
        hidden2d = hidden.reshape(-1, width)  # [B·T, H]
        picked = linear_log_probs_at(
            hidden2d, lm_head_weight, lm_head_bias, plan.rows, plan.cols, plan.shared, self.chunk_size
        )
        return self.combined.terms(LF.token_probs_from(plan, *picked), zero)

    def forward(
        self,
        hidden: torch.Tensor,
        lm_head_weight: torch.Tensor,
        labels: torch.Tensor,
        answer_labels: torch.Tensor,
        lm_head_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.components(hidden, lm_head_weight, labels, answer_labels, lm_head_bias)["total"]


def fused_linear_loss(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    answer_labels: torch.Tensor,
    *,
    weights: Mapping[str, float],
    options: Mapping[str, Mapping[str, object]] | None = None,
    lm_head_bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
    ignore_index: int = LF.IGNORE_INDEX,
) -> torch.Tensor:
    """``CombinedLoss(weights, options)(hidden @ lm_head_weight.T + lm_head_bias, labels, answer_labels)`` in value
    and gradients (w.r.t. hidden, weight, bias), computed ``chunk_size`` rows at a time: no ``[N, V]`` tensor.

    Shapes: ``hidden [B, T, H]``, ``lm_head_weight [V, H]``, ``lm_head_bias [V]`` or None, ``labels`` and
    ``answer_labels [B, T]`` aligned with ``hidden`` (:func:`causal_shift`) → scalar. See this module's docstring
    and ``docs/losses.md`` for the passes.
    """
    module = FusedLinearCombinedLoss(weights, options, ignore_index=ignore_index, chunk_size=chunk_size)
    return module(hidden, lm_head_weight, labels, answer_labels, lm_head_bias)
