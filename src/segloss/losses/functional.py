"""Token-level segmentation losses over the vocabulary, as pure functions.

Every answer token is a "pixel" and every vocabulary entry a "class". All functions share one contract:

* ``logits``: ``[B, T, V]`` float tensor, **already aligned** with ``labels`` (position ``t`` predicts
  ``labels[:, t]``; see :func:`segloss.losses.causal_shift`). float16/bfloat16 are computed in float32;
  float32 and float64 keep their precision.
* ``labels``: ``[B, T]`` integer tensor; positions equal to ``ignore_index`` (default −100) are **dropped**: they
  never enter a loss's value or gradient.
* Returns a scalar tensor. When no position is valid the loss is exactly 0 with a zero gradient (never NaN).

No function loops over vocabulary classes: every loss is a *core* over the N valid tokens and the K classes
present in their labels (K ≤ N), fed by :func:`gather_token_probs`, which reads each row's log-softmax once
(:func:`segloss.losses._gather.log_probs_at`) and never keeps a ``[N, V]`` softmax alive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import torch

from segloss.losses._gather import _compute_dtype, log_probs_at

IGNORE_INDEX = -100


def _check_inputs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() == 2 and labels.dim() == 1:  # [N, V] / [N]: one sequence
        logits, labels = logits[None], labels[None]
    if logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor [B, T, V], got {tuple(logits.shape)} {logits.dtype}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must have shape [B, T] = {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor (token ids), got {labels.dtype}")
    return logits, labels


class TokenProbs(NamedTuple):
    """What the losses read of the valid tokens of one labels tensor (N valid tokens, K classes present)."""

    log_p_target: torch.Tensor  # [N] log p_i[y_i]
    seq: torch.Tensor  # [N] sequence index of each token
    probs_present: torch.Tensor | None  # [N, K] p_i[c] for the classes present among the targets
    target_class: torch.Tensor | None  # [N] position of y_i among the present classes


def _valid_tokens(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [N], targets [N]) of the valid positions of flattened ``labels`` (shapes already checked)."""
    flat = labels.reshape(-1)  # [M]
    rows = (flat != ignore_index).nonzero().squeeze(1)  # [N], sorted
    targets = flat[rows].long()  # [N]
    vocab = logits.shape[-1]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
        bad = targets[(targets < 0) | (targets >= vocab)][0].item()
        raise ValueError(f"label {bad} is outside the vocabulary [0, {vocab}) and is not ignore_index={ignore_index}")
    return rows, targets


def gather_token_probs(
    logits: torch.Tensor, label_sets: Sequence[tuple[torch.Tensor, bool]], *, ignore_index: int = IGNORE_INDEX
) -> list[TokenProbs | None]:
    """One pass over the vocabulary for several label tensors of the same logits.

    ``label_sets`` holds ``(labels [B, T], needs_present_classes)`` pairs; the result holds one :class:`TokenProbs`
    per pair (None when it has no valid token). The log-softmax of each row is computed once however many label
    tensors and losses read it, which is what makes CE + a task loss cost about one CE.
    """
    checked = [_check_inputs(logits, labels) for labels, _ in label_sets]
    logits = checked[0][0]
    seq_len, vocab = logits.shape[1], logits.shape[2]
    tokens = [_valid_tokens(logits, labels, ignore_index) for _, labels in checked]
    rows = torch.cat([r for r, _ in tokens]).unique()  # [U] sorted union of valid rows
    if rows.numel() == 0:
        return [None] * len(label_sets)
    positions = [torch.searchsorted(rows, r) for r, _ in tokens]  # each set's rows inside the union
    cols = rows.new_zeros(rows.numel(), len(tokens))  # [U, S]: column j holds set j's target (0 elsewhere)
    for j, ((_, targets), pos) in enumerate(zip(tokens, positions, strict=True)):
        cols[pos, j] = targets
    wanted = [targets for (_, targets), (_, present) in zip(tokens, label_sets, strict=True) if present]
    shared = torch.cat(wanted).unique() if wanted else None  # [K] classes any region loss needs
    log_p_rows, log_p_shared = log_probs_at(logits.reshape(-1, vocab), rows, cols, shared)  # [U, S], [U, K]
    out: list[TokenProbs | None] = []
    for j, ((set_rows, targets), pos, (_, present)) in enumerate(zip(tokens, positions, label_sets, strict=True)):
        if set_rows.numel() == 0:
            out.append(None)
            continue
        probs = target_class = None
        if present:
            classes, target_class = torch.unique(targets, return_inverse=True)  # [K_j], [N]
            probs = log_p_shared[pos][:, torch.searchsorted(cast(torch.Tensor, shared), classes)].exp()  # [N, K_j]
        out.append(TokenProbs(log_p_rows[pos, j], set_rows // seq_len, probs, target_class))
    return out


def _zero(logits: torch.Tensor) -> torch.Tensor:
    # An empty sum: exactly 0, attached to the graph, gradient 0 (a plain `logits.sum() * 0` is NaN for inf logits).
    return logits.reshape(-1)[:0].sum().to(_compute_dtype(logits.dtype))


def _one_minus_p(log_p: torch.Tensor) -> torch.Tensor:
    # 1 − p from log p without cancellation; clamped so (1 − p)^γ has a finite gradient at p = 1.
    return (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)


# Options that must be ≥ 0 (γ = 0 turns focal into CE; α = 0 drops SADL's self-adjusting factor).
NON_NEGATIVE_OPTIONS = frozenset({"gamma", "alpha", "smooth"})


def check_option(loss: str, key: str, value: object) -> object:
    """The validated option: ``ignore_index`` an int, the others finite numbers (≥ 0 where the formula needs it)."""
    if key == "ignore_index":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"loss {loss!r}: ignore_index must be an int, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"loss {loss!r}: option {key} must be a finite number, got {value!r}")
    if key in NON_NEGATIVE_OPTIONS and value < 0:
        raise ValueError(f"loss {loss!r}: option {key} must be ≥ 0, got {value!r}")
    return float(value)


def _single(name: str, core: Callable[..., torch.Tensor], needs_present: bool) -> Callable[..., torch.Tensor]:
    """The public loss ``f(logits, labels, *, ignore_index, **options)`` for the core ``core(tokens, **options)``."""

    def loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX, **options: Any):
        check_option(name, "ignore_index", ignore_index)
        options = {key: check_option(name, key, value) for key, value in options.items()}
        (tokens,) = gather_token_probs(logits, [(labels, needs_present)], ignore_index=ignore_index)
        return _zero(logits) if tokens is None else core(tokens, **options)

    return loss


def ce_core(tokens: TokenProbs) -> torch.Tensor:
    return -tokens.log_p_target.mean()


def focal_core(tokens: TokenProbs, *, gamma: float = 2.0) -> torch.Tensor:
    log_p = tokens.log_p_target  # [N]
    return -(_one_minus_p(log_p).pow(gamma) * log_p).mean()


def sadl_core(tokens: TokenProbs, *, alpha: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    log_p = tokens.log_p_target  # [N]
    q = _one_minus_p(log_p).pow(alpha) * log_p.exp()  # [N]
    return (1 - (2 * q + gamma) / (q + 1 + gamma)).mean()


def gdice_core(tokens: TokenProbs, *, smooth: float = 1e-5) -> torch.Tensor:
    probs, target_k = cast(torch.Tensor, tokens.probs_present), cast(torch.Tensor, tokens.target_class)  # [N, K], [N]
    seq = tokens.seq  # [N]
    n_seq, n_cls = int(seq.max()) + 1, probs.shape[1]
    pair = seq * n_cls + target_k  # [N] flat (sequence, class) index
    counts = torch.bincount(pair, minlength=n_seq * n_cls).view(n_seq, n_cls).to(probs.dtype)  # [B, K] n_c
    p_target = tokens.log_p_target.exp()  # [N]
    intersection = probs.new_zeros(n_seq * n_cls).index_add(0, pair, p_target).view(n_seq, n_cls)  # [B, K] I_c
    mass = probs.new_zeros(n_seq, n_cls).index_add(0, seq, probs)  # [B, K] P_c
    is_present = counts > 0  # [B, K]
    weights = torch.where(is_present, counts.clamp_min(1).pow(-2), torch.zeros_like(counts))  # [B, K] w_c
    outside = 1 - (probs * is_present[seq]).sum(1)  # [N] mass on classes absent from the token's sequence
    outside = probs.new_zeros(n_seq).index_add(0, seq, outside)  # [B]
    numerator = 2 * (weights * intersection).sum(1) + smooth  # [B]
    denominator = (weights * (counts + mass)).sum(1) + weights.amax(1) * outside + smooth  # [B]
    has_tokens = is_present.any(1)  # [B]
    return (1 - numerator / denominator)[has_tokens].mean()


# Benchmarks switch this off to time the full batched sort (the worst case of the top-k path).
_PRUNE_LOVASZ = True


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. sorted errors, per class. ``[K, R] → [K, R]``."""
    gts = fg_sorted.sum(1, keepdim=True)  # [K, 1]
    intersection = gts - fg_sorted.cumsum(1)  # [K, R]
    union = gts + (1 - fg_sorted).cumsum(1)  # [K, R], ≥ 1 since every class is present
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def _sorted_relevant_errors(errors: torch.Tensor, fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the errors that can carry a Lovász gradient, in decreasing order: ([K, R] errors, [K, R] fg).

    Past a class's last foreground token in sorted order the Jaccard index stays 1, so every error smaller than its
    smallest foreground error has zero weight. Keeping the top R = max_c #{e ≥ min fg error of c} per class is
    exact, and much cheaper than a full sort once predictions separate the classes.
    """
    min_fg = torch.where(fg, errors, torch.full_like(errors, torch.inf)).amin(1, keepdim=True)  # [K, 1]
    keep = int((errors >= min_fg).sum(1).max())  # R
    if not _PRUNE_LOVASZ or keep > errors.shape[1] // 2:
        errors_sorted, order = errors.sort(dim=1, descending=True)  # [K, N]
    else:
        errors_sorted, order = errors.topk(keep, dim=1)  # [K, R], sorted
    return errors_sorted, fg.gather(1, order)


def lovasz_core(tokens: TokenProbs) -> torch.Tensor:
    probs, target_k = cast(torch.Tensor, tokens.probs_present), cast(torch.Tensor, tokens.target_class)  # [N, K], [N]
    fg = target_k[None, :] == torch.arange(probs.shape[1], device=probs.device)[:, None]  # [K, N]
    probs_t = probs.t()  # [K, N]
    errors = torch.where(fg, 1 - probs_t, probs_t)  # [K, N]
    errors_sorted, fg_sorted = _sorted_relevant_errors(errors, fg)  # [K, R]
    return (errors_sorted * _lovasz_grad(fg_sorted.to(probs.dtype))).sum(1).mean()


# name -> (core over TokenProbs, whether it needs the probabilities of the present classes)
CORES: dict[str, tuple[Callable[..., torch.Tensor], bool]] = {
    "ce": (ce_core, False),
    "focal": (focal_core, False),
    "sadl": (sadl_core, False),
    "gdice": (gdice_core, True),
    "lovasz": (lovasz_core, True),
}
_ce, _focal, _sadl, _gdice, _lovasz = (_single(n, *CORES[n]) for n in ("ce", "focal", "sadl", "gdice", "lovasz"))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy, mean over valid tokens: ``−(1/N) Σ_i log p_i[y_i]``.

    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _ce(logits, labels, ignore_index=ignore_index)


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, gamma: float = 2.0, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Focal loss (Lin et al., 2017), mean over valid tokens: ``−(1/N) Σ_i (1 − p_t)^γ · log p_t``.

    Computed from log-probabilities, so it is finite for p_t → 0 and p_t → 1 and stable for half-precision
    inputs. ``gamma=0`` is cross-entropy. Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _focal(logits, labels, ignore_index=ignore_index, gamma=gamma)


def self_adjusting_dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 1.0,
    gamma: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Self-adjusting Dice loss (Li et al., 2020), mean over valid tokens.

    ``q = (1 − p_t)^α · p_t``, loss ``= 1 − (2q + γ) / (q + 1 + γ)`` per token, as in the original research code
    (γ is the smoothing term). Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _sadl(logits, labels, ignore_index=ignore_index, alpha=alpha, gamma=gamma)


def generalized_dice_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, smooth: float = 1e-5, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Generalized Dice loss (Sudre et al., 2017) per sequence, mean over sequences with a valid token.

    For a sequence with valid tokens i, counts ``n_c`` of each class in its labels, ``P_c = Σ_i p_i[c]`` and
    ``I_c = Σ_{i: y_i = c} p_i[c]``::

        w_c = 1 / n_c²  for classes present in the sequence;  w_max = max_c w_c for absent classes (MONAI's rule)
        GDL = 1 − (2 Σ_c w_c I_c + smooth) / (Σ_c w_c (n_c + P_c) + w_max · Σ_i (1 − Σ_{c present} p_i[c]) + smooth)

    The absent-class term is the probability mass outside the present classes, so no one-hot over V is built.
    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _gdice(logits, labels, ignore_index=ignore_index, smooth=smooth)


def lovasz_softmax_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Lovász-Softmax (Berman et al., 2018) over all valid tokens of the batch, mean over the classes present.

    For each present class c, errors ``e_i = |[y_i = c] − p_i[c]|`` are sorted in decreasing order and the loss is
    ``Σ_i e_(i) · g_i`` with g the gradient of the Lovász extension of the Jaccard index. All K classes are
    sorted together (one batched sort or top-k over the errors that can matter; see ``_sorted_relevant_errors``).
    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _lovasz(logits, labels, ignore_index=ignore_index)
