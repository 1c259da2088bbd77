"""Log-probabilities of a few (token, class) pairs without materialising the softmax over the vocabulary.

Every task loss needs ``log p[i, c] = z[i, c] − logsumexp(z[i, :])`` only for the valid tokens ``i`` and a handful
of classes ``c`` per token (its target, or the classes present in the batch). Autograd through
``log_softmax(z)[rows][:, cols]`` would keep a [M, V] log-softmax alive and build a second [M, V] gradient for the
indexing; this Function keeps nothing of size V for backward and writes the gradient once, in row chunks.

Valid tokens usually come in runs (the answer span of each sequence), so a chunk of valid rows is read through a
view of the row range it spans whenever that range is at most twice as long as the chunk; scattered rows are
gathered with ``index_select`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

# Rows per chunk are chosen so that a chunk's float32 temporaries stay near this many elements (16 MiB).
_CHUNK_ELEMENTS = 1 << 22
# A chunk is read through a view of the rows it spans when the span holds at most this many times its rows.
_MAX_SPAN_RATIO = 2.0


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision logits are computed in float32; float32/float64 keep their precision.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _row_chunks(rows: torch.Tensor, vocab: int) -> Iterator[tuple[int, int, int, int]]:
    """(start, stop) into ``rows`` and the (first, last + 1) row range the chunk spans; rows are sorted."""
    step = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
    bounds = rows.tolist()
    for start in range(0, len(bounds), step):
        stop = min(start + step, len(bounds))
        yield start, stop, bounds[start], bounds[stop - 1] + 1


def _uses_span(start: int, stop: int, first: int, end: int) -> bool:
    return end - first <= _MAX_SPAN_RATIO * (stop - start)


def _flat_indices(
    local: torch.Tensor, cols: torch.Tensor, shared: torch.Tensor, vocab: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions in a row-major [S, V] chunk of (local[i], cols[i, k]) and (local[i], shared[k])."""
    base = local[:, None] * vocab  # [R, 1]
    return base + cols, base + shared[None, :]  # [R, K1], [R, K2]


# The two passes are custom operators: torch.compile(fullgraph=True) sees each as one opaque call with known output
# shapes (no graph break on the Python chunk loop or the data-dependent row count), and eager calls run them as is.
@torch.library.custom_op("segloss::log_probs_at", mutates_args=())
def _log_probs_at_op(
    logits2d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, shared: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    # logits2d [M, V]; rows [N] sorted distinct row indices; cols [N, K1] per-row and shared [K2] class indices.
    # log_softmax / softmax are single fused kernels: per chunk they beat logsumexp and exp(z − lse) several times.
    dtype = compute_dtype(logits2d.dtype)
    per_row, per_shared = [], []
    for start, stop, first, end in _row_chunks(rows, logits2d.shape[-1]):
        idx = rows[start:stop]
        if _uses_span(start, stop, first, end):  # a view: no copy of the rows
            source, local = logits2d[first:end], idx - first
        else:
            source, local = logits2d.index_select(0, idx), torch.arange(len(idx), device=idx.device)
        source = source.contiguous()  # a strided view (e.g. transposed logits) cannot be flattened in place
        log_p = torch.log_softmax(source.to(dtype), dim=-1).view(-1)  # [S·V] chunk temporary
        row_idx, shared_idx = _flat_indices(local, cols[start:stop], shared, logits2d.shape[-1])
        # index_select on flat positions: advanced indexing with 2-D indices is ~80× slower here on CPU.
        per_row.append(log_p.index_select(0, row_idx.view(-1)).view(row_idx.shape))  # [R, K1]
        per_shared.append(log_p.index_select(0, shared_idx.view(-1)).view(shared_idx.shape))  # [R, K2]
    if not per_row:
        return logits2d.new_zeros((0, cols.shape[-1]), dtype=dtype), logits2d.new_zeros(
            (0, shared.numel()), dtype=dtype
        )
    return torch.cat(per_row), torch.cat(per_shared)  # [N, K1], [N, K2]


@_log_probs_at_op.register_fake
def _(logits2d, rows, cols, shared):
    dtype = compute_dtype(logits2d.dtype)
    return cols.new_empty(cols.shape, dtype=dtype), cols.new_empty((cols.shape[0], shared.shape[0]), dtype=dtype)


@torch.library.custom_op("segloss::log_probs_at_backward", mutates_args=())
def _log_probs_at_backward_op(
    logits2d: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    shared: torch.Tensor,
    grad_rows: torch.Tensor,
    grad_shared: torch.Tensor,
) -> torch.Tensor:
    work_dtype = compute_dtype(logits2d.dtype)
    # [M, V]: the only full-size allocation; every row is written once. Contiguous whatever the logits' strides
    # (empty_like would copy a transposed layout, and the flat views below need a dense row-major buffer).
    grad = logits2d.new_empty(logits2d.shape)
    written = torch.zeros(logits2d.shape[0], dtype=torch.bool, device=logits2d.device)  # [M]
    for start, stop, first, end in _row_chunks(rows, logits2d.shape[-1]):
        idx = rows[start:stop]
        g_rows, g_shared = grad_rows[start:stop], grad_shared[start:stop]  # [R, K1], [R, K2]
        span = _uses_span(start, stop, first, end)
        local = idx - first if span else torch.arange(len(idx), device=idx.device)  # [R]
        height = end - first if span else len(idx)
        source = (logits2d[first:end] if span else logits2d.index_select(0, idx)).contiguous()  # [S, V]
        # d/dz (z_c − lse) = onehot(c) − softmax(z): scale the softmax by −Σ_c g, then add g at the classes.
        row_sums = g_rows.sum(dim=-1) + g_shared.sum(dim=-1)  # [R]
        scale = g_rows.new_zeros(height).index_copy_(0, local, -row_sums)  # [S], 0 on rows outside the loss
        direct = span and grad.dtype == work_dtype  # write straight into the gradient's rows
        chunk = torch.mul(
            torch.softmax(source.to(work_dtype), dim=-1), scale[:, None], out=grad[first:end] if direct else None
        )  # [S, V]
        if span and height > len(idx):  # exact zeros on rows outside the loss, even for non-finite logits
            outside = torch.ones(height, dtype=torch.bool, device=idx.device).index_fill_(0, local, False)
            chunk.index_fill_(0, outside.nonzero().squeeze(1), 0.0)
        # Flat index_add accumulates repeated classes (a row's CE and answer targets are often the same class).
        row_idx, shared_idx = _flat_indices(local, cols[start:stop], shared, logits2d.shape[-1])
        flat = chunk.view(-1)
        flat.index_add_(0, row_idx.view(-1), g_rows.reshape(-1).to(flat.dtype))
        flat.index_add_(0, shared_idx.view(-1), g_shared.reshape(-1).to(flat.dtype))
        if span:
            if not direct:
                grad[first:end] = chunk
            written[first:end] = True
        else:
            grad.index_copy_(0, idx, chunk.to(grad.dtype))
            written[idx] = True
    grad[~written] = 0
    return grad


@_log_probs_at_backward_op.register_fake
def _(logits2d, rows, cols, shared, grad_rows, grad_shared):
    return logits2d.new_empty(logits2d.shape)  # contiguous, as the real one


def _setup_log_probs_at(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward_log_probs_at(ctx, grad_rows: torch.Tensor | None, grad_shared: torch.Tensor | None):
    logits2d, rows, cols, shared = ctx.saved_tensors
    dtype = compute_dtype(logits2d.dtype)
    grad_rows = cols.new_zeros(cols.shape, dtype=dtype) if grad_rows is None else grad_rows
    grad_shared = cols.new_zeros((cols.shape[0], shared.shape[0]), dtype=dtype) if grad_shared is None else grad_shared
    return _log_probs_at_backward_op(logits2d, rows, cols, shared, grad_rows, grad_shared), None, None, None


_log_probs_at_op.register_autograd(_backward_log_probs_at, setup_context=_setup_log_probs_at)


def log_probs_at(
    logits2d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, shared: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_softmax(logits2d, -1)`` at ``(rows[i], cols[i, k])`` and at ``(rows[i], shared[k])``, memory-lean.

    Args:
        logits2d: ``[M, V]`` logits (any float dtype; half precision is computed in float32).
        rows: ``[N]`` sorted, distinct row indices (the valid tokens).
        cols: ``[N, K1]`` class indices for each selected row (e.g. its target).
        shared: ``[K2]`` class indices wanted for every selected row (e.g. the classes present), or None.

    Returns:
        ``([N, K1], [N, K2])`` log-probabilities in the compute dtype.
    """
    if shared is None:
        shared = cols.new_zeros(0)
    return _log_probs_at_op(logits2d, rows, cols, shared)
