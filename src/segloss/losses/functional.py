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
from typing import Any, NamedTuple

import torch

from segloss.losses._gather import _compute_dtype, log_probs_at

IGNORE_INDEX = -100


def _check_inputs(
    logits: torch.Tensor, labels: torch.Tensor, name: str = "labels"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [B, T, V], labels [B, T])``; ``[N, V]`` with ``[N]`` is one sequence. ``name`` is the labels' name."""
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor [B, T, V], got dtype {logits.dtype}")
    if logits.dim() == 2 and labels.dim() == 1:  # [N, V] / [N]: one sequence
        logits, labels = logits[None], labels[None]
    if logits.dim() != 3:
        raise ValueError(
            f"logits must have shape [B, T, V] (or [N, V] with 1-D {name} [N]), got logits {tuple(logits.shape)} "
            f"with {name} {tuple(labels.shape)}"
        )
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"{name} must have shape [B, T] = {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        # A boolean mask would silently become classes 0/1.
        raise ValueError(f"{name} must be an integer tensor (token ids), got {labels.dtype}")
    return logits, labels


class TokenProbs(NamedTuple):
    """What the losses read of the valid tokens of one labels tensor (N valid tokens, K classes present)."""

    log_p_target: torch.Tensor  # [N] log p_i[y_i]
    seq: torch.Tensor  # [N] sequence index of each token
    probs_present: torch.Tensor | None  # [N, K] p_i[c] for the classes present among the targets
    target_class: torch.Tensor | None  # [N] position of y_i among the present classes


def _valid_tokens(
    vocab: int, labels: torch.Tensor, ignore_index: int, name: str = "labels"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [N], targets [N]) of the valid positions of flattened ``labels`` (shapes already checked)."""
    flat = labels.reshape(-1)  # [M]
    rows = (flat != ignore_index).nonzero().squeeze(1)  # [N], sorted
    targets = flat[rows].long()  # [N]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
        bad = targets[(targets < 0) | (targets >= vocab)][0].item()
        raise ValueError(
            f"{name} value {bad} is outside the vocabulary [0, {vocab}) and is not ignore_index={ignore_index}"
        )
    return rows, targets


class GatherPlan(NamedTuple):
    """Which log-probabilities the losses need, decided from the labels alone (no logits read yet).

    ``rows [U]``: sorted union of the valid rows of every labels tensor; ``cols [U, S]``: column j holds labels
    tensor j's target on that row (0 where it has none); ``shared [K]``: the classes present in the labels of the
    region losses (None if no region loss); ``tokens``: per labels tensor, its (rows, targets, positions in ``rows``,
    needs present classes).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    shared: torch.Tensor | None
    tokens: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]]
    seq_len: int


def plan_gather(
    shape: tuple[int, int, int],
    label_sets: Sequence[tuple[torch.Tensor, bool]],
    *,
    ignore_index: int = IGNORE_INDEX,
    names: Sequence[str] | None = None,
) -> GatherPlan:
    """The :class:`GatherPlan` of ``label_sets`` (``(labels [B, T], needs_present_classes)``) for logits ``shape``."""
    names = list(names) if names is not None else ["labels"] * len(label_sets)
    seq_len, vocab = shape[1], shape[2]
    valid = [_valid_tokens(vocab, labels, ignore_index, n) for (labels, _), n in zip(label_sets, names, strict=True)]
    rows = torch.cat([r for r, _ in valid]).unique()  # [U] sorted union of valid rows
    positions = [torch.searchsorted(rows, r) for r, _ in valid]  # each set's rows inside the union
    cols = rows.new_zeros(rows.numel(), len(valid))  # [U, S]
    for j, ((_, targets), pos) in enumerate(zip(valid, positions, strict=True)):
        cols[pos, j] = targets
    wanted = [targets for (_, targets), (_, present) in zip(valid, label_sets, strict=True) if present]
    shared = torch.cat(wanted).unique() if wanted else None  # [K] classes any region loss needs
    tokens = [(r, t, pos, present) for (r, t), pos, (_, present) in zip(valid, positions, label_sets, strict=True)]
    return GatherPlan(rows, cols, shared, tokens, seq_len)


def token_probs_from(
    plan: GatherPlan, log_p_rows: torch.Tensor, log_p_shared: torch.Tensor
) -> list[TokenProbs | None]:
    """Split the gathered ``log_p_rows [U, S]`` and ``log_p_shared [U, K]`` into one TokenProbs per labels tensor."""
    out: list[TokenProbs | None] = []
    for j, (set_rows, targets, pos, present) in enumerate(plan.tokens):
        if set_rows.numel() == 0:
            out.append(None)
            continue
        probs = target_class = None
        if present and plan.shared is not None:
            classes, target_class = torch.unique(targets, return_inverse=True)  # [K_j], [N]
            probs = log_p_shared[pos][:, torch.searchsorted(plan.shared, classes)].exp()  # [N, K_j]
        out.append(TokenProbs(log_p_rows[pos, j], set_rows // plan.seq_len, probs, target_class))
    return out


def gather_token_probs(
    logits: torch.Tensor,
    label_sets: Sequence[tuple[torch.Tensor, bool]],
    *,
    ignore_index: int = IGNORE_INDEX,
    names: Sequence[str] | None = None,
) -> list[TokenProbs | None]:
    """One pass over the vocabulary for several label tensors of the same logits.

    ``label_sets`` holds ``(labels [B, T], needs_present_classes)`` pairs (``names``: how errors call them); the
    result holds one :class:`TokenProbs` per pair (None when it has no valid token). The log-softmax of each row is
    computed once however many label tensors and losses read it, which is what makes CE + a task loss cost about
    one CE.
    """
    names = list(names) if names is not None else ["labels"] * len(label_sets)
    checked = [_check_inputs(logits, labels, n) for (labels, _), n in zip(label_sets, names, strict=True)]
    logits = checked[0][0]
    sets = [(labels, present) for (_, labels), (_, present) in zip(checked, label_sets, strict=True)]
    plan = plan_gather(tuple(logits.shape), sets, ignore_index=ignore_index, names=names)  # type: ignore[arg-type]
    if plan.rows.numel() == 0:
        return [None] * len(label_sets)
    log_p_rows, log_p_shared = log_probs_at(logits.reshape(-1, logits.shape[-1]), plan.rows, plan.cols, plan.shared)
    return token_probs_from(plan, log_p_rows, log_p_shared)


def _zero(logits: torch.Tensor) -> torch.Tensor:
    # An empty sum: exactly 0, attached to the graph, gradient 0 (a plain `logits.sum() * 0` is NaN for inf logits).
    return logits.reshape(-1)[:0].sum().to(_compute_dtype(logits.dtype))


def _one_minus_p(log_p: torch.Tensor) -> torch.Tensor:
    # 1 − p from log p without cancellation; clamped so (1 − p)^γ has a finite gradient at p = 1.
    return (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)


# Options that must be ≥ 0 (γ = 0 turns focal into CE; α = 0 drops SADL's self-adjusting factor).
NON_NEGATIVE_OPTIONS = frozenset({"gamma", "alpha", "beta", "smooth"})
# Losses that are a mean over tokens: only they have a "sum" reduction (callers normalise by their own counts).
TOKEN_SUM_LOSSES = frozenset({"ce", "focal", "sadl"})
REDUCTIONS = ("mean", "sum")
# Generalized Dice class weights w_c as a function of the class count n_c.
W_TYPES = ("square", "simple", "uniform")


def _check_choice(loss: str, key: str, value: object, allowed: tuple[str, ...], why: str = "") -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"loss {loss!r}: {key} must be one of {', '.join(map(repr, allowed))}, got {value!r}{why}")
    return value


def check_option(loss: str, key: str, value: object) -> object:
    """The validated option: ``ignore_index`` an int, ``reduction``/``w_type`` a known name, the others finite
    numbers (≥ 0 where the formula needs it)."""
    if key == "ignore_index":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"loss {loss!r}: ignore_index must be an int, got {value!r}")
        return value
    if key == "reduction":
        if loss in TOKEN_SUM_LOSSES:
            return _check_choice(loss, key, value, REDUCTIONS)
        return _check_choice(loss, key, value, ("mean",), " (it is not a sum over tokens, so it has no 'sum')")
    if key == "w_type":
        return _check_choice(loss, key, value, W_TYPES)
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


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    return values.sum() if reduction == "sum" else values.mean()


def ce_core(tokens: TokenProbs, *, reduction: str = "mean") -> torch.Tensor:
    return _reduce(-tokens.log_p_target, reduction)


def focal_core(tokens: TokenProbs, *, gamma: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    log_p = tokens.log_p_target  # [N]
    return _reduce(-(_one_minus_p(log_p).pow(gamma) * log_p), reduction)


def sadl_core(tokens: TokenProbs, *, alpha: float = 1.0, gamma: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    log_p = tokens.log_p_target  # [N]
    q = _one_minus_p(log_p).pow(alpha) * log_p.exp()  # [N]
    return _reduce(1 - (2 * q + gamma) / (q + 1 + gamma), reduction)


class RegionStats(NamedTuple):
    """Per sequence b and present class k (of the K classes present anywhere in the labels), all ``[B, K]``."""

    counts: torch.Tensor  # n_c: how often c is a target in the sequence
    intersection: torch.Tensor  # I_c = Σ_{i: y_i = c} p_i[c]   (soft true positives)
    mass: torch.Tensor  # P_c = Σ_i p_i[c]                 (soft predicted size)
    present: torch.Tensor  # n_c > 0 (bool)
    outside: torch.Tensor  # [B] Σ_i (1 − Σ_{c present in b} p_i[c]): mass on classes absent from the sequence


def region_stats(tokens: TokenProbs) -> RegionStats:
    """The per-sequence sums every Dice-family loss is built from (no loop over sequences or classes)."""
    probs, target_k, seq = tokens.probs_present, tokens.target_class, tokens.seq  # [N, K], [N], [N]
    assert probs is not None and target_k is not None, "region losses need the present classes"
    n_seq, n_cls = int(seq.max()) + 1, probs.shape[1]
    pair = seq * n_cls + target_k  # [N] flat (sequence, class) index
    counts = torch.bincount(pair, minlength=n_seq * n_cls).view(n_seq, n_cls).to(probs.dtype)  # [B, K]
    p_target = tokens.log_p_target.exp()  # [N]
    intersection = probs.new_zeros(n_seq * n_cls).index_add(0, pair, p_target).view(n_seq, n_cls)  # [B, K]
    mass = probs.new_zeros(n_seq, n_cls).index_add(0, seq, probs)  # [B, K]
    present = counts > 0  # [B, K]
    outside = probs.new_zeros(n_seq).index_add(0, seq, 1 - (probs * present[seq]).sum(1))  # [B]
    return RegionStats(counts, intersection, mass, present, outside)


def _sequence_mean(per_sequence: torch.Tensor, stats: RegionStats) -> torch.Tensor:
    # Sequences without a valid token (all masked, or past the last one with a target) do not count.
    return per_sequence[stats.present.any(1)].mean()


def gdice_core(
    tokens: TokenProbs, *, smooth: float = 1e-5, w_type: str = "square", reduction: str = "mean"
) -> torch.Tensor:
    stats = region_stats(tokens)
    counts, present = stats.counts, stats.present  # [B, K]
    power = {"square": 2.0, "simple": 1.0, "uniform": 0.0}[w_type]
    weights = torch.where(present, counts.clamp_min(1).pow(-power), torch.zeros_like(counts))  # [B, K] w_c
    numerator = 2 * (weights * stats.intersection).sum(1) + smooth  # [B]
    # Absent classes weigh w_max (MONAI's rule for infinite weights): their n_c is 0, their P_c sums to `outside`.
    denominator = (weights * (counts + stats.mass)).sum(1) + weights.amax(1) * stats.outside + smooth  # [B]
    return _sequence_mean(1 - numerator / denominator, stats)


def _class_mean(
    score: Callable[[RegionStats], tuple[torch.Tensor, torch.Tensor]], tokens: TokenProbs, gamma: float
) -> torch.Tensor:
    """Per sequence, the mean over its present classes of ``(1 − num/den)^γ``; then the mean over sequences."""
    stats = region_stats(tokens)
    numerator, denominator = score(stats)  # [B, K]
    # Absent (sequence, class) pairs get 0/1: they must neither count nor put a 0/0 into the gradient.
    numerator = torch.where(stats.present, numerator, torch.zeros_like(numerator))
    denominator = torch.where(stats.present, denominator, torch.ones_like(denominator))
    per_class = 1 - numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)  # [B, K]
    if gamma != 1.0:  # clamped so (·)^γ with γ < 1 keeps a finite gradient at a perfect score
        per_class = per_class.clamp_min(torch.finfo(per_class.dtype).tiny).pow(gamma)
    present = stats.present.to(per_class.dtype)
    per_sequence = (per_class * present).sum(1) / present.sum(1).clamp_min(1)  # [B]
    return _sequence_mean(per_sequence, stats)


def dice_core(tokens: TokenProbs, *, smooth: float = 1e-5, reduction: str = "mean") -> torch.Tensor:
    def score(s: RegionStats) -> tuple[torch.Tensor, torch.Tensor]:
        return 2 * s.intersection + smooth, s.counts + s.mass + smooth

    return _class_mean(score, tokens, 1.0)


def jaccard_core(tokens: TokenProbs, *, smooth: float = 1e-5, reduction: str = "mean") -> torch.Tensor:
    def score(s: RegionStats) -> tuple[torch.Tensor, torch.Tensor]:
        return s.intersection + smooth, s.counts + s.mass - s.intersection + smooth

    return _class_mean(score, tokens, 1.0)


def _tversky_score(
    alpha: float, beta: float, smooth: float
) -> Callable[[RegionStats], tuple[torch.Tensor, torch.Tensor]]:
    def score(s: RegionStats) -> tuple[torch.Tensor, torch.Tensor]:
        false_pos, false_neg = s.mass - s.intersection, s.counts - s.intersection  # [B, K]
        return s.intersection + smooth, s.intersection + alpha * false_pos + beta * false_neg + smooth

    return score


def tversky_core(
    tokens: TokenProbs, *, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5, reduction: str = "mean"
) -> torch.Tensor:
    return _class_mean(_tversky_score(alpha, beta, smooth), tokens, 1.0)


def focal_tversky_core(
    tokens: TokenProbs,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 0.75,
    smooth: float = 1e-5,
    reduction: str = "mean",
) -> torch.Tensor:
    return _class_mean(_tversky_score(alpha, beta, smooth), tokens, gamma)


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


def lovasz_core(tokens: TokenProbs, *, reduction: str = "mean") -> torch.Tensor:
    probs, target_k = tokens.probs_present, tokens.target_class  # [N, K], [N]
    assert probs is not None and target_k is not None, "region losses need the present classes"
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
    "dice": (dice_core, True),
    "jaccard": (jaccard_core, True),
    "tversky": (tversky_core, True),
    "focal_tversky": (focal_tversky_core, True),
}
_FNS = {name: _single(name, *CORES[name]) for name in CORES}


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean", ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Cross-entropy, mean over valid tokens: ``−(1/N) Σ_i log p_i[y_i]`` (``reduction="sum"``: without the 1/N).

    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _FNS["ce"](logits, labels, ignore_index=ignore_index, reduction=reduction)


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    gamma: float = 2.0,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Focal loss (Lin et al., 2017), mean over valid tokens: ``−(1/N) Σ_i (1 − p_t)^γ · log p_t`` ("sum": no 1/N).

    Computed from log-probabilities, so it is finite for p_t → 0 and p_t → 1 and stable for half-precision
    inputs. ``gamma=0`` is cross-entropy. Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _FNS["focal"](logits, labels, ignore_index=ignore_index, gamma=gamma, reduction=reduction)


def self_adjusting_dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 1.0,
    gamma: float = 1.0,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Self-adjusting Dice loss (Li et al., 2020), mean over valid tokens (``reduction="sum"``: their sum).

    ``q = (1 − p_t)^α · p_t``, loss ``= 1 − (2q + γ) / (q + 1 + γ)`` per token, as in the original research code
    (γ is the smoothing term). Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _FNS["sadl"](logits, labels, ignore_index=ignore_index, alpha=alpha, gamma=gamma, reduction=reduction)


def generalized_dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    smooth: float = 1e-5,
    w_type: str = "square",
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Generalized Dice loss (Sudre et al., 2017) per sequence, mean over sequences with a valid token.

    For a sequence with valid tokens i, counts ``n_c`` of each class in its labels, ``P_c = Σ_i p_i[c]`` and
    ``I_c = Σ_{i: y_i = c} p_i[c]``::

        w_c = 1 / n_c² ("square", default), 1 / n_c ("simple") or 1 ("uniform") for classes present in the sequence;
        w_max = max_c w_c for absent classes (MONAI's rule)
        GDL = 1 − (2 Σ_c w_c I_c + smooth) / (Σ_c w_c (n_c + P_c) + w_max · Σ_i (1 − Σ_{c present} p_i[c]) + smooth)

    The absent-class term is the probability mass outside the present classes, so no one-hot over V is built.
    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _FNS["gdice"](logits, labels, ignore_index=ignore_index, smooth=smooth, w_type=w_type, reduction=reduction)


def lovasz_softmax_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean", ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Lovász-Softmax (Berman et al., 2018) over all valid tokens of the batch, mean over the classes present.

    For each present class c, errors ``e_i = |[y_i = c] − p_i[c]|`` are sorted in decreasing order and the loss is
    ``Σ_i e_(i) · g_i`` with g the gradient of the Lovász extension of the Jaccard index. All K classes are
    sorted together (one batched sort or top-k over the errors that can matter; see ``_sorted_relevant_errors``).
    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.
    """
    return _FNS["lovasz"](logits, labels, ignore_index=ignore_index, reduction=reduction)


_REGION_CONVENTION = """Per sequence, over the classes present in its labels (n_c > 0), with ``n_c``,
    ``I_c = Σ_{i: y_i = c} p_i[c]`` (soft true positives) and ``P_c = Σ_i p_i[c]``; soft false positives
    ``P_c − I_c``, false negatives ``n_c − I_c``.
    The loss is the mean over the present classes, then over sequences with a valid token. Absent classes add no
    term of their own (their score would be a 0/0 smoothed away); probability mass on them still costs, as it is
    taken from ``I_c`` of the target classes. ``reduction`` is "mean" only. Shapes: ``logits [B, T, V]``,
    ``labels [B, T]`` → scalar."""


def dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    smooth: float = 1e-5,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    return _FNS["dice"](logits, labels, ignore_index=ignore_index, smooth=smooth, reduction=reduction)


def jaccard_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    smooth: float = 1e-5,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    return _FNS["jaccard"](logits, labels, ignore_index=ignore_index, smooth=smooth, reduction=reduction)


def tversky_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1e-5,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    options = {"alpha": alpha, "beta": beta, "smooth": smooth, "reduction": reduction}
    return _FNS["tversky"](logits, labels, ignore_index=ignore_index, **options)


def focal_tversky_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 0.75,
    smooth: float = 1e-5,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    options = {"alpha": alpha, "beta": beta, "gamma": gamma, "smooth": smooth, "reduction": reduction}
    return _FNS["focal_tversky"](logits, labels, ignore_index=ignore_index, **options)


dice_loss.__doc__ = f"""Soft Dice loss (Milletari et al., 2016; per class as MONAI's ``DiceLoss``).

    Per present class ``1 − (2 I_c + smooth) / (n_c + P_c + smooth)``. {_REGION_CONVENTION}"""
jaccard_loss.__doc__ = f"""Soft Jaccard (IoU) loss (Rahman & Wang, 2016).

    Per present class ``1 − (I_c + smooth) / (n_c + P_c − I_c + smooth)``. {_REGION_CONVENTION}"""
tversky_loss.__doc__ = f"""Tversky loss (Salehi et al., 2017; α weighs false positives, β false negatives, as in MONAI
    and smp). Per present class ``1 − TI_c``, ``TI_c = (I_c + s) / (I_c + α (P_c − I_c) + β (n_c − I_c) + s)``;
    α = β = 0.5 is Dice, α = β = 1 is Jaccard (up to smoothing). {_REGION_CONVENTION}"""
focal_tversky_loss.__doc__ = f"""Focal Tversky loss (Abraham & Khan, 2019): per present class ``(1 − TI_c)^γ`` with the
    Tversky index of :func:`tversky_loss`; γ = 0.75 is the paper's 1/γ with γ = 4/3 (γ < 1 raises the weight of
    classes that are already fairly well predicted). {_REGION_CONVENTION}"""
