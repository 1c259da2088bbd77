"""Log-probabilities of a few (token, class) pairs without materialising the softmax over the vocabulary.

Every task loss needs ``log p[i, c] = z[i, c] − logsumexp(z[i, :])`` only for the valid tokens ``i`` and a handful
of classes ``c`` per token (its target, or the classes present in the batch). Autograd through
``log_softmax(z)[rows][:, cols]`` would keep a [M, V] log-softmax alive and build a second [M, V] gradient for the
indexing; this Function keeps nothing of size V for backward and writes the gradient once, in row chunks.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# Rows per chunk are chosen so that a chunk's float32 temporaries stay near this many elements (16 MiB).
_CHUNK_ELEMENTS = 1 << 22


def _chunks(n_rows: int, vocab: int) -> range:
    step = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
    return range(0, n_rows, step)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision logits are computed in float32; float32/float64 keep their precision.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _LogProbsAt(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits2d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        # logits2d [M, V]; rows [N] distinct row indices; cols [N, K] per-row or [K] shared class indices.
        dtype = _compute_dtype(logits2d.dtype)
        lse = torch.empty(rows.numel(), dtype=dtype, device=logits2d.device)  # [N]
        step = _chunks(rows.numel(), logits2d.shape[-1]).step
        for start in range(0, rows.numel(), step):
            chunk = logits2d.index_select(0, rows[start : start + step]).to(dtype)  # [R, V]
            lse[start : start + step] = torch.logsumexp(chunk, dim=-1)
        picked = logits2d[rows[:, None], cols if cols.dim() == 2 else cols[None, :]].to(dtype)  # [N, K]
        ctx.save_for_backward(logits2d, rows, cols, lse)
        return picked - lse[:, None]  # [N, K]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        logits2d, rows, cols, lse = ctx.saved_tensors
        grad = torch.zeros_like(logits2d)  # [M, V]: the only full-size allocation
        step = _chunks(rows.numel(), logits2d.shape[-1]).step
        for start in range(0, rows.numel(), step):
            idx = rows[start : start + step]
            g = grad_out[start : start + step]  # [R, K]
            chunk = logits2d.index_select(0, idx).to(lse.dtype)  # [R, V]
            # d/dz (z_c − lse) = onehot(c) − softmax(z): scale the softmax by −Σ_c g, then add g at the classes.
            chunk.sub_(lse[start : start + step, None]).exp_().mul_(-g.sum(dim=-1, keepdim=True))
            chunk_cols = cols[start : start + step] if cols.dim() == 2 else cols.expand(len(idx), -1)  # [R, K]
            chunk.scatter_add_(1, chunk_cols, g)
            grad.index_copy_(0, idx, chunk.to(grad.dtype))
        return grad, None, None


def log_probs_at(logits2d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits2d, -1)[rows[:, None], cols]`` in the compute dtype, memory-lean.

    Args:
        logits2d: ``[M, V]`` logits (any float dtype; half precision is computed in float32).
        rows: ``[N]`` distinct row indices (the valid tokens).
        cols: ``[N, K]`` class indices for each selected row, or ``[K]`` classes shared by all rows.

    Returns:
        ``[N, K]`` log-probabilities.
    """
    return _LogProbsAt.apply(logits2d, rows, cols)
