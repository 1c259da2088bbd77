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

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from segloss.losses import core
from segloss.losses._gather import compute_dtype
from segloss.losses.modules import CombinedLoss
from segloss.losses.table import IGNORE_INDEX, LOSS_TABLE, LossDef

if TYPE_CHECKING:
    from segloss.losses.accumulate import StepShare

# Benchmarks switch this off to time the two-pass path on a token-local objective (what the one pass saves).
_ONE_PASS = True
# Default rows per chunk: a [C, V] float32 chunk of about this many elements (64 MiB).
CHUNK_ELEMENTS = 1 << 24


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


def _chunks(rows: torch.Tensor, chunk: int) -> range:
    return range(0, rows.numel(), chunk)


def _softmax_stats(z: torch.Tensor, cols: torch.Tensor, shared: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """In place on the chunk ``z [C, V]``: ``z ← exp(z − max)``; returns (log p at cols, log p at shared, row sums of
    exp(z − max), lse): log p = (z − max) − log Σ exp(z − max), only the values asked for are kept."""
    row_max = z.amax(dim=-1, keepdim=True)  # [C, 1]
    z.sub_(row_max)
    picked_rows, picked_shared = z.gather(1, cols), z.index_select(1, shared)
    sums = z.exp_().sum(dim=-1, keepdim=True)  # [C, 1]
    log_sum = sums.log()
    return picked_rows - log_sum, picked_shared - log_sum, sums, row_max + log_sum


def _apply_grad_z(
    grad_z: torch.Tensor,
    h: torch.Tensor,
    idx: torch.Tensor,
    weight: torch.Tensor,
    grads: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None],
) -> None:
    """``∂L/∂h_rows = (∂L/∂z) W``, ``∂L/∂W += (∂L/∂z)^T h``, ``∂L/∂b += Σ_rows ∂L/∂z`` for one chunk."""
    grad_h, grad_w, grad_b = grads
    if grad_w is not None:
        grad_w.addmm_(grad_z.t(), h.to(grad_z.dtype))
    if grad_b is not None:
        grad_b += grad_z.sum(0)
    if grad_h is not None:
        grad_h.index_copy_(0, idx, (grad_z.to(weight.dtype) @ weight).to(grad_h.dtype))


def _new_grads(hidden2d: torch.Tensor, weight: torch.Tensor, needs: list[bool]) -> tuple[torch.Tensor | None, ...]:
    # Half-precision weights accumulate their gradient over chunks in float32, as one big matmul would.
    dtype = compute_dtype(weight.dtype)
    grad_h = hidden2d.new_zeros(hidden2d.shape) if needs[0] else None  # [M, H], 0 on rows outside the loss
    grad_w = weight.new_zeros(weight.shape, dtype=dtype) if needs[1] else None  # [V, H]
    grad_b = weight.new_zeros(weight.shape[0], dtype=dtype) if needs[2] else None  # [V]
    return grad_h, grad_w, grad_b


def _finish_grads(
    grads: tuple[torch.Tensor | None, ...], weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op's gradient outputs: an empty tensor stands for "not needed" (an op cannot return None)."""
    grad_h, grad_w, grad_b = grads
    return (
        weight.new_empty(0) if grad_h is None else grad_h,
        weight.new_empty(0) if grad_w is None else grad_w.to(weight.dtype),
        weight.new_empty(0) if grad_b is None or bias is None else grad_b.to(bias.dtype),
    )


def _fake_grads(hidden2d, weight, bias, needs):
    return (
        hidden2d.new_empty(hidden2d.shape) if needs[0] else weight.new_empty(0),
        weight.new_empty(weight.shape) if needs[1] else weight.new_empty(0),
        weight.new_empty(weight.shape[0]) if needs[2] and bias is not None else weight.new_empty(0),
    )


def _or_none(grad: torch.Tensor, wanted: bool) -> torch.Tensor | None:
    return grad if wanted else None


# -- two passes: log-probabilities forward, the gradient rebuilt from a recomputed z backward (any loss) ----------
@torch.library.custom_op("segloss::linear_log_probs_at", mutates_args=())
def _linear_forward_op(
    hidden2d: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rows: torch.Tensor,
    cols: torch.Tensor,
    shared: torch.Tensor,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # hidden2d [M, H]; weight [V, H]; rows [U] sorted distinct; cols [U, S]; shared [K] → [U, S], [U, K], lse [U, 1].
    chunk = _rows_per_chunk(chunk, rows.numel(), weight.shape[0])
    dtype = compute_dtype(weight.dtype)
    buffer = hidden2d.new_empty((min(chunk, rows.numel()), weight.shape[0]), dtype=dtype)  # [C, V]
    per_row, per_shared, lse = [], [], []
    for start in _chunks(rows, chunk):
        h = hidden2d.index_select(0, rows[start : start + chunk])  # [C, H]
        z = _chunk_logits(h, weight, bias, buffer)  # [C, V]
        log_p_rows, log_p_shared, _, row_lse = _softmax_stats(z, cols[start : start + chunk], shared)
        per_row.append(log_p_rows)  # [C, S]
        per_shared.append(log_p_shared)  # [C, K]
        lse.append(row_lse)  # [C, 1]: softmax(z) = exp(z − lse) in backward
    if not per_row:
        return (
            hidden2d.new_zeros(cols.shape, dtype=dtype),
            hidden2d.new_zeros((0, shared.numel()), dtype=dtype),
            hidden2d.new_zeros((0, 1), dtype=dtype),
        )
    return torch.cat(per_row), torch.cat(per_shared), torch.cat(lse)


@_linear_forward_op.register_fake
def _(hidden2d, weight, bias, rows, cols, shared, chunk):
    dtype = compute_dtype(weight.dtype)
    n_rows = cols.shape[0]
    return (
        hidden2d.new_empty(cols.shape, dtype=dtype),
        hidden2d.new_empty((n_rows, shared.shape[0]), dtype=dtype),
        hidden2d.new_empty((n_rows, 1), dtype=dtype),
    )


@torch.library.custom_op("segloss::linear_log_probs_at_backward", mutates_args=())
def _linear_backward_op(
    hidden2d: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rows: torch.Tensor,
    cols: torch.Tensor,
    shared: torch.Tensor,
    lse: torch.Tensor,
    grad_rows: torch.Tensor,
    grad_shared: torch.Tensor,
    chunk: int,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    chunk = _rows_per_chunk(chunk, rows.numel(), weight.shape[0])
    grads = _new_grads(hidden2d, weight, needs)
    buffer = hidden2d.new_empty((min(chunk, rows.numel()), weight.shape[0]), dtype=compute_dtype(weight.dtype))
    for start in _chunks(rows, chunk):
        stop = start + chunk
        idx, g_rows, g_shared = rows[start:stop], grad_rows[start:stop], grad_shared[start:stop]
        h = hidden2d.index_select(0, idx)  # [C, H]
        # ∂L/∂z = scatter(g) − softmax(z) · Σ g, built in place in the buffer (z recomputed: the fourth matmul).
        grad_z = _chunk_logits(h, weight, bias, buffer).sub_(lse[start:stop]).exp_()  # [C, V] softmax
        grad_z.mul_(-(g_rows.sum(-1) + g_shared.sum(-1))[:, None])
        grad_z.scatter_add_(1, cols[start:stop], g_rows.to(grad_z.dtype))  # repeated classes accumulate
        grad_z.index_add_(1, shared, g_shared.to(grad_z.dtype))
        _apply_grad_z(grad_z, h, idx, weight, grads)  # type: ignore[arg-type]
    return _finish_grads(grads, weight, bias)


@_linear_backward_op.register_fake
def _(hidden2d, weight, bias, rows, cols, shared, lse, grad_rows, grad_shared, chunk, needs):
    return _fake_grads(hidden2d, weight, bias, needs)


def _setup_linear(ctx, inputs, output) -> None:
    hidden2d, weight, bias, rows, cols, shared, chunk = inputs
    ctx.save_for_backward(hidden2d, weight, bias, rows, cols, shared, output[2])
    ctx.chunk = chunk
    ctx.mark_non_differentiable(output[2])


def _backward_linear(ctx, grad_rows, grad_shared, _grad_lse):
    hidden2d, weight, bias, rows, cols, shared, lse = ctx.saved_tensors
    needs = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), bool(ctx.needs_input_grad[2])]
    grad_rows = torch.zeros_like(lse.expand(-1, cols.shape[1])) if grad_rows is None else grad_rows
    grad_shared = lse.new_zeros((lse.shape[0], shared.shape[0])) if grad_shared is None else grad_shared
    grads = _linear_backward_op(
        hidden2d, weight, bias, rows, cols, shared, lse, grad_rows, grad_shared, ctx.chunk, needs
    )
    return (*(_or_none(g, n) for g, n in zip(grads, needs, strict=True)), None, None, None, None)


_linear_forward_op.register_autograd(_backward_linear, setup_context=_setup_linear)


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
    shared = cols.new_zeros(0) if shared is None else shared
    log_p_rows, log_p_shared, _ = _linear_forward_op(
        hidden2d, weight, bias, rows, cols, shared, _chunk(chunk_size, weight)
    )
    return log_p_rows, log_p_shared


def _chunk(chunk_size: int | None, weight: torch.Tensor) -> int:
    return chunk_size if chunk_size is not None else 0  # 0: the operators choose (they know the row count)


def _rows_per_chunk(chunk: int, n_rows: int, vocab: int) -> int:
    """``chunk`` rows, or by default an eighth of the rows, within ``[CHUNK_ELEMENTS, 4 · CHUNK_ELEMENTS] / V``:
    the ``[C, V]`` buffer stays ≤ 1/8 of the logits (or 64 MiB), and few chunks mean few passes of ∂L/∂W += …
    over the ``[V, H]`` weight gradient, which with 131-row chunks at V = 128k cost more than the logits saved."""
    if chunk > 0:
        return chunk
    return max(1, CHUNK_ELEMENTS // vocab, min(n_rows // 8, 4 * CHUNK_ELEMENTS // vocab))


# -- one pass: token-local objectives, the gradient computed while each chunk's z is at hand (3 matmuls) ----------
@functools.lru_cache(maxsize=64)
def _token_terms(spec: str) -> list[tuple[LossDef, Any]]:
    """``[[name, options], ...]`` (JSON) → each term's table entry and typed options."""
    return [(LOSS_TABLE[name], LOSS_TABLE[name].make(**options)) for name, options in json.loads(spec)]


@torch.library.custom_op("segloss::linear_token_losses", mutates_args=())
def _linear_token_op(
    hidden2d: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rows: torch.Tensor,
    cols: torch.Tensor,
    valid: torch.Tensor,
    scales: torch.Tensor,
    term_sets: list[int],
    spec: str,
    chunk: int,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σ_k scales_k Σ_{i valid in set k} ℓ_k(log p_ik) (``total``, and each term) with its gradients w.r.t. hidden,
    weight and bias, computed in the same pass: z, then log p and dℓ/dlog p (the loss's ``derivative``), then
    ∂L/∂z = scatter(g) − softmax(z) Σ g in place, then ∂L/∂h and ∂L/∂W. Three head matmuls, like Liger's fused CE."""
    chunk = _rows_per_chunk(chunk, rows.numel(), weight.shape[0])
    dtype = compute_dtype(weight.dtype)
    terms = _token_terms(spec)
    grads = _new_grads(hidden2d, weight, needs)
    values = hidden2d.new_zeros(len(terms), dtype=dtype)
    buffer = hidden2d.new_empty((min(chunk, rows.numel()), weight.shape[0]), dtype=dtype)  # [C, V]
    scales = scales.to(dtype)
    for start in _chunks(rows, chunk):
        stop = start + chunk
        idx, chunk_cols, mask = rows[start:stop], cols[start:stop], valid[start:stop]
        h = hidden2d.index_select(0, idx)  # [C, H]
        z = _chunk_logits(h, weight, bias, buffer)  # [C, V]
        log_p, _, sums, _ = _softmax_stats(z, chunk_cols, chunk_cols.new_zeros(0))  # [C, S]; z = exp(z − max)
        g = torch.zeros_like(log_p)  # [C, S] ∂L/∂log p
        for k, ((definition, options), column) in enumerate(zip(terms, term_sets, strict=True)):
            assert definition.per_token is not None and definition.derivative is not None
            here = mask[:, column]
            loss = definition.per_token(log_p[:, column], options)
            values[k] += scales[k] * torch.where(here, loss, torch.zeros_like(loss)).sum()
            slope = definition.derivative(log_p[:, column], options)
            g[:, column] += scales[k] * torch.where(here, slope, torch.zeros_like(slope))
        grad_z = z.div_(sums).mul_(-g.sum(-1, keepdim=True))  # [C, V] −softmax · Σ g
        grad_z.scatter_add_(1, chunk_cols, g)
        _apply_grad_z(grad_z, h, idx, weight, grads)  # type: ignore[arg-type]
    return (values.sum(), values, *_finish_grads(grads, weight, bias))


@_linear_token_op.register_fake
def _(hidden2d, weight, bias, rows, cols, valid, scales, term_sets, spec, chunk, needs):
    dtype = compute_dtype(weight.dtype)
    return (
        hidden2d.new_empty((), dtype=dtype),
        hidden2d.new_empty(len(term_sets), dtype=dtype),
        *_fake_grads(hidden2d, weight, bias, needs),
    )


def _setup_token(ctx, inputs, output) -> None:
    ctx.needs = inputs[-1]
    ctx.mark_non_differentiable(*output[1:])
    if torch.compiler.is_compiling():
        ctx.save_for_backward(*output[2:])
        ctx.grads = None
    else:  # held by ctx alone, so backward can hand them over without a copy (see below)
        ctx.grads = list(output[2:])


def _backward_token(ctx, grad_total, _grad_terms, *_unused):
    saved = ctx.saved_tensors if ctx.grads is None else ctx.grads
    if len(saved) != 3:
        raise RuntimeError("the fused one-pass loss handed its gradients to the first backward; no second backward")
    # The usual upstream gradient is exactly 1 (total is the loss): then the gradients computed in forward are the
    # answer, and handing them over uncopied (nothing else holds them) keeps a second [V, H] weight gradient out of
    # the peak memory. Another gradient (a scaled loss) multiplies a copy.
    unit = ctx.grads is not None and bool(grad_total == 1)
    if unit:
        ctx.grads = ()
    grads = [(g if unit else grad_total * g) if wanted else None for g, wanted in zip(saved, ctx.needs, strict=True)]
    return (*grads, None, None, None, None, None, None, None, None)


_linear_token_op.register_autograd(_backward_token, setup_context=_setup_token)


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
    return sum(p.reshape(-1)[:0].sum() for p in parts).to(compute_dtype(weight.dtype))  # type: ignore[union-attr]


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
        ignore_index: int = IGNORE_INDEX,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive int (rows per chunk) or None, got {chunk_size!r}")
        self.combined = CombinedLoss(weights, options, ignore_index=ignore_index)
        self.chunk_size = chunk_size
        _ = self._token_spec

    @classmethod
    def from_combined(cls, combined: CombinedLoss, *, chunk_size: int | None = None) -> FusedLinearCombinedLoss:
        """The fused form of an existing :class:`CombinedLoss` (same weights, options and ignore_index)."""
        fused = cls(combined.weights, ignore_index=combined.ignore_index, chunk_size=chunk_size)
        fused.combined = combined
        _ = fused._token_spec
        return fused

    @property
    def weights(self) -> dict[str, float]:
        return self.combined.weights

    @property
    def _token_spec(self) -> str:
        # The terms as the one-pass operator reads them (a string: an operator takes no Python objects). Built once
        # per CombinedLoss, outside any traced region.
        cached = getattr(self, "_spec_cache", None)
        if cached is None or cached[0] is not self.combined:
            spec = [[name, options.non_defaults()] for name, (_, options) in self.combined.definitions().items()]
            cached = self._spec_cache = (self.combined, json.dumps(spec))  # a tuple: not registered as a submodule
        return cached[1]

    @property
    def one_pass(self) -> bool:
        """Whether the objective is token-local (every loss has a derivative in log p_t): then the gradient is
        computed in the forward pass (3 head matmuls); region losses need their statistics first (two passes)."""
        token_local = (d.kind == "token" and d.derivative is not None for d, _ in self.combined.definitions().values())
        return _ONE_PASS and all(token_local)

    def _plan(
        self,
        hidden: torch.Tensor,
        lm_head_weight: torch.Tensor,
        lm_head_bias: torch.Tensor | None,
        sets: list[tuple[torch.Tensor, bool]],
        names: list[str],
        step: StepShare | None,
    ) -> core.GatherPlan:
        _check_head(hidden, lm_head_weight, lm_head_bias)
        shape = (hidden.shape[0], hidden.shape[1], lm_head_weight.shape[0])
        shape_only = hidden.new_empty(shape, device="meta")  # for the checks
        for (set_labels, _), name in zip(sets, names, strict=True):
            core.check_inputs(shape_only, set_labels, name)
        classes = self.combined.gather_classes(shape[2], sets[0][0].device, step)
        return core.plan_gather(shape, sets, ignore_index=self.combined.ignore_index, names=names, classes=classes)

    def components(
        self,
        hidden: torch.Tensor,
        lm_head_weight: torch.Tensor,
        labels: torch.Tensor,
        answer_labels: torch.Tensor,
        lm_head_bias: torch.Tensor | None = None,
        *,
        step: StepShare | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each weighted term and ``"total"``, as :meth:`CombinedLoss.components` on the logits would give.

        With a token-local objective (:attr:`one_pass`) only ``"total"`` carries a gradient: the terms are its
        parts, computed in the same pass, for logging.
        """
        sets, names = self.combined.label_sets(labels, answer_labels)
        plan = self._plan(hidden, lm_head_weight, lm_head_bias, sets, names, step)
        hidden2d = hidden.reshape(-1, hidden.shape[-1])  # [B·T, H]
        zero = _zero(hidden, lm_head_weight, lm_head_bias)
        if self.one_pass:
            return self._one_pass(hidden2d, lm_head_weight, lm_head_bias, plan, names, step, zero)
        picked = linear_log_probs_at(
            hidden2d, lm_head_weight, lm_head_bias, plan.rows, plan.cols, plan.classes, self.chunk_size
        )
        return self.combined.terms(core.token_probs_from(plan, *picked), zero, step)

    def _one_pass(
        self,
        hidden2d: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        plan: core.GatherPlan,
        names: list[str],
        step: StepShare | None,
        zero: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        valid = torch.zeros_like(plan.cols, dtype=torch.bool)  # [U, S]: row i has a target in labels set j
        for j, positions in enumerate(plan.positions):
            valid[positions, j] = True
        counts = valid.to(zero.dtype).sum(0)  # [S] valid targets per set
        scales, term_sets = [], []
        for name, (_, options) in self.combined.definitions().items():
            column = 0 if name == "ce" else len(names) - 1
            if options.reduction == "sum":
                scale: torch.Tensor | float = 1.0
            elif step is not None:
                scale = 1.0 / max(step.counts.labels if name == "ce" else step.counts.answer, 1.0)
            else:
                scale = 1.0 / counts[column].clamp_min(1)
            scales.append(self.combined.weights[name] * torch.as_tensor(scale, dtype=zero.dtype, device=zero.device))
            term_sets.append(column)
        needs = [hidden2d.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad]
        total, values, *_ = _linear_token_op(
            hidden2d,
            weight,
            bias,
            plan.rows,
            plan.cols,
            valid,
            torch.stack(scales),
            term_sets,
            self._token_spec,
            _chunk(self.chunk_size, weight),
            needs,
        )
        terms = {name: values[k] for k, name in enumerate(self.combined.definitions())}
        return {**terms, "total": total + zero}

    @torch.no_grad()
    def batch_statistics(
        self,
        hidden: torch.Tensor,
        lm_head_weight: torch.Tensor,
        answer_labels: torch.Tensor,
        lm_head_bias: torch.Tensor | None = None,
        *,
        step: StepShare,
    ) -> dict[str, tuple[torch.Tensor, ...]]:
        """:meth:`CombinedLoss.batch_statistics` with the head applied in chunks."""
        sets, names = [(answer_labels, True)], ["answer_labels"]
        plan = self._plan(hidden, lm_head_weight, lm_head_bias, sets, names, step)
        hidden2d = hidden.reshape(-1, hidden.shape[-1])
        picked = linear_log_probs_at(
            hidden2d, lm_head_weight, lm_head_bias, plan.rows, plan.cols, plan.classes, self.chunk_size
        )
        (tokens,) = core.token_probs_from(plan, *picked)
        return self.combined.statistics_of(tokens)

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
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """``CombinedLoss(weights, options)(hidden @ lm_head_weight.T + lm_head_bias, labels, answer_labels)`` in value
    and gradients (w.r.t. hidden, weight, bias), computed ``chunk_size`` rows at a time: no ``[N, V]`` tensor.

    Shapes: ``hidden [B, T, H]``, ``lm_head_weight [V, H]``, ``lm_head_bias [V]`` or None, ``labels`` and
    ``answer_labels [B, T]`` aligned with ``hidden`` (:func:`causal_shift`) → scalar. See this module's docstring
    and ``docs/losses.md`` for the passes.
    """
    module = FusedLinearCombinedLoss(weights, options, ignore_index=ignore_index, chunk_size=chunk_size)
    return module(hidden, lm_head_weight, labels, answer_labels, lm_head_bias)
