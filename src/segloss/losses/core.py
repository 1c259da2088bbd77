"""What every loss is computed from: a plan read from the labels alone, one pass over the vocabulary, and the cores.

Every answer token is a "pixel" and every vocabulary entry a "class". A loss never sees the ``[N, V]``
probabilities: :func:`gather_token_probs` reads, for the N valid tokens of each labels tensor, the log-probability of
its target and — for the region losses — the probabilities of K gathered classes (the classes present among the
targets, or all V when a loss counts every class), computing each row's log-softmax once
(:func:`segloss.losses._gather.log_probs_at`). The cores then work on ``[N]`` and ``[N, K]`` tensors:

* a **token-local** core maps each token's ``log p_t`` to its loss (``[N] → [N]``);
* a **region** core is a *statistic* of the tokens of each group (a sequence, or the whole batch) and a *score* of
  that statistic per group (``[G]``). The statistics of the Dice family are sums over tokens (``sum``: micro-batches
  and processes add them); Lovász's are the tokens' probabilities themselves (``cat``: they are concatenated).

Data-dependent steps (which rows are valid, which classes are present, how many sorted errors Lovász keeps) run
inside custom operators with declared output shapes, so ``torch.compile(fullgraph=True)`` traces every loss without
a graph break; everything else is plain tensor code without Python branches on tensor values.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from segloss.defaults import IGNORE_INDEX as IGNORE_INDEX  # re-exported: the losses' ignore_index default
from segloss.losses._gather import compute_dtype, log_probs_at

# Benchmarks switch this off to time the full batched sort (the worst case of the top-k path).
_PRUNE_LOVASZ = True


def check_inputs(
    logits: torch.Tensor, labels: torch.Tensor, name: str = "labels"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [B, T, V], labels [B, T])``; ``[N, V]`` with ``[N]`` is one sequence. ``name`` is the labels' name.

    Only shapes and dtypes are checked here (out-of-vocabulary values are found by :func:`plan_gather`).
    """
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


class GatherPlan(NamedTuple):
    """Which log-probabilities the losses need, decided from the labels alone (no logits read yet).

    ``rows [U]``: sorted union of the valid rows of every labels tensor; ``cols [U, S]``: column j holds labels
    tensor j's target on that row (0 where it has none); ``classes [K]``: the gathered classes (vocabulary ids) the
    region losses read; per labels tensor j, ``positions[j] [N_j]`` (its valid rows' places in ``rows``) and
    ``target_class[j] [N_j]`` (each target's place in ``classes``; 0 for a set without region losses).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    classes: torch.Tensor
    positions: list[torch.Tensor]
    target_class: list[torch.Tensor]
    region: list[bool]
    seq_len: int
    n_seq: int


def _valid_tokens(vocab: int, labels: torch.Tensor, ignore_index: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [N], targets [N]) of the valid positions of flattened ``labels``."""
    flat = labels.reshape(-1)  # [M]
    rows = (flat != ignore_index).nonzero().squeeze(1)  # [N], sorted
    targets = flat[rows].long()  # [N]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
        bad = targets[(targets < 0) | (targets >= vocab)][0].item()
        raise ValueError(
            f"{name} value {bad} is outside the vocabulary [0, {vocab}) and is not ignore_index={ignore_index}"
        )
    return rows, targets


@torch.library.custom_op("segloss::plan_gather", mutates_args=())
def _plan_op(
    label_sets: list[torch.Tensor],
    vocab: int,
    ignore_index: int,
    region: list[bool],
    classes: torch.Tensor | None,
    names: str,
) -> list[torch.Tensor]:
    """[rows, cols, classes, positions_0.., target_class_0..]: see GatherPlan. Raises on out-of-vocabulary labels."""
    valid = [
        _valid_tokens(vocab, labels, ignore_index, n) for labels, n in zip(label_sets, names.split(","), strict=True)
    ]
    rows = torch.cat([r for r, _ in valid]).unique()  # [U] sorted union of valid rows
    positions = [torch.searchsorted(rows, r) for r, _ in valid]  # each set's rows inside the union
    cols = rows.new_zeros(rows.numel(), len(valid))  # [U, S]
    for j, ((_, targets), pos) in enumerate(zip(valid, positions, strict=True)):
        cols[pos, j] = targets
    wanted = [targets for (_, targets), needs in zip(valid, region, strict=True) if needs]
    if classes is None:
        classes = torch.cat(wanted).unique() if wanted else rows.new_zeros(0)  # [K] present classes
    else:
        classes = classes.to(rows.device, torch.long).clone()  # given (the step's classes, or all V): sorted
    target_class = []
    for (_, targets), needs in zip(valid, region, strict=True):
        place = torch.searchsorted(classes, targets).clamp_max(max(classes.numel() - 1, 0)) if needs else None
        if place is not None and targets.numel() and not bool((classes[place] == targets).all()):
            raise ValueError("the given classes must include every target of the region losses' labels")
        target_class.append(torch.zeros_like(targets) if place is None else place)
    return [rows, cols, classes, *positions, *target_class]


@_plan_op.register_fake
def _(label_sets, vocab, ignore_index, region, classes, names):
    ctx = torch.library.get_ctx()
    like = label_sets[0].new_empty(0, dtype=torch.long)
    n_rows = ctx.new_dynamic_size()
    n_classes = classes.shape[0] if classes is not None else ctx.new_dynamic_size()
    sizes = [ctx.new_dynamic_size() for _ in label_sets]
    return [
        like.new_empty(n_rows),
        like.new_empty((n_rows, len(label_sets))),
        like.new_empty(n_classes),
        *[like.new_empty(n) for n in sizes],
        *[like.new_empty(n) for n in sizes],
    ]


def plan_gather(
    shape: tuple[int, int, int],
    label_sets: list[tuple[torch.Tensor, bool]],
    *,
    ignore_index: int = IGNORE_INDEX,
    names: list[str] | None = None,
    classes: torch.Tensor | None = None,
) -> GatherPlan:
    """The :class:`GatherPlan` of ``label_sets`` (``(labels [B, T], read classes)``) for logits of ``shape``.

    ``classes``: the classes to gather, sorted (default: those present among the region sets' targets).
    """
    names = list(names) if names is not None else ["labels"] * len(label_sets)
    region = [bool(needs) for _, needs in label_sets]
    out = _plan_op([labels for labels, _ in label_sets], shape[2], ignore_index, region, classes, ",".join(names))
    n = len(label_sets)
    return GatherPlan(out[0], out[1], out[2], out[3 : 3 + n], out[3 + n :], region, shape[1], shape[0])


class TokenProbs(NamedTuple):
    """What the losses read of the valid tokens of one labels tensor (N valid tokens, K gathered classes)."""

    log_p_target: torch.Tensor  # [N] log p_i[y_i]
    seq: torch.Tensor  # [N] sequence (row of the labels) of each token, sorted
    n_seq: int  # B: the number of sequences of the labels
    probs: torch.Tensor  # [N, K] p_i[c] for the gathered classes ([N, 0] when no region loss reads this tensor)
    target_class: torch.Tensor  # [N] position of y_i among the gathered classes
    classes: torch.Tensor  # [K] the gathered classes (vocabulary ids)


def token_probs_from(plan: GatherPlan, log_p_rows: torch.Tensor, log_p_shared: torch.Tensor) -> list[TokenProbs]:
    """Split the gathered ``log_p_rows [U, S]`` and ``log_p_shared [U, K]`` into one TokenProbs per labels tensor."""
    out = []
    for j, (pos, target_class) in enumerate(zip(plan.positions, plan.target_class, strict=True)):
        probs = log_p_shared[pos].exp() if plan.region[j] else log_p_shared.new_zeros((pos.shape[0], 0))
        seq = plan.rows[pos] // plan.seq_len
        out.append(TokenProbs(log_p_rows[pos, j], seq, plan.n_seq, probs, target_class, plan.classes))
    return out


def gather_token_probs(
    logits: torch.Tensor,
    label_sets: list[tuple[torch.Tensor, bool]],
    *,
    ignore_index: int = IGNORE_INDEX,
    names: list[str] | None = None,
    classes: torch.Tensor | None = None,
) -> list[TokenProbs]:
    """One pass over the vocabulary for several label tensors of the same logits.

    ``label_sets`` holds ``(labels [B, T], read_classes)`` pairs (``names``: how errors call them); the result holds
    one :class:`TokenProbs` per pair (N = 0 when it has no valid token). The log-softmax of each row is computed once
    however many label tensors and losses read it, which is what makes CE + a task loss cost about one CE.
    ``classes``: which classes the region losses read (default: those present among their targets).
    """
    names = list(names) if names is not None else ["labels"] * len(label_sets)
    checked = [check_inputs(logits, labels, n) for (labels, _), n in zip(label_sets, names, strict=True)]
    logits = checked[0][0]
    sets = [(labels, needs) for (_, labels), (_, needs) in zip(checked, label_sets, strict=True)]
    shape = (logits.shape[0], logits.shape[1], logits.shape[2])
    plan = plan_gather(shape, sets, ignore_index=ignore_index, names=names, classes=classes)
    log_p_rows, log_p_shared = log_probs_at(logits.reshape(-1, shape[2]), plan.rows, plan.cols, plan.classes)
    return token_probs_from(plan, log_p_rows, log_p_shared)


def zero_like(tensor: torch.Tensor) -> torch.Tensor:
    """An empty sum: exactly 0, attached to the graph, gradient 0 (``logits.sum() * 0`` is NaN for inf logits)."""
    return tensor.reshape(-1)[:0].sum().to(compute_dtype(tensor.dtype))


def count(values: torch.Tensor) -> torch.Tensor:
    """The number of entries of ``values`` as a tensor of its dtype (a traced size, no Python int)."""
    return torch.ones_like(values).sum()


# -- token-local cores: log p_t [N] → per-token loss [N], and its derivative for the fused one-pass head ------------
def one_minus_p(log_p: torch.Tensor) -> torch.Tensor:
    """1 − p from log p without cancellation; clamped so (1 − p)^γ has a finite gradient at p = 1."""
    return (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)


def ce_per_token(log_p: torch.Tensor, options: Any) -> torch.Tensor:
    return -log_p


def ce_derivative(log_p: torch.Tensor, options: Any) -> torch.Tensor:
    return torch.full_like(log_p, -1.0)


def focal_per_token(log_p: torch.Tensor, options: Any) -> torch.Tensor:
    return -(one_minus_p(log_p).pow(options.gamma) * log_p)


def focal_derivative(log_p: torch.Tensor, options: Any) -> torch.Tensor:
    # d/dlog p of −q^γ log p with q = 1 − p, dq/dlog p = −p (zero where q is clamped, as autograd's clamp gives).
    gamma, p = options.gamma, log_p.exp()
    raw = -torch.expm1(log_p)
    q = raw.clamp_min(torch.finfo(log_p.dtype).tiny)
    dq = torch.where(raw >= q, -p, torch.zeros_like(p))
    slope = gamma * q.pow(gamma - 1) * dq if gamma != 0 else torch.zeros_like(p)
    return -(slope * log_p + q.pow(gamma))


def sadl_per_token(log_p: torch.Tensor, options: Any) -> torch.Tensor:
    q = one_minus_p(log_p).pow(options.alpha) * log_p.exp()  # [N]
    return 1 - (2 * q + options.gamma) / (q + 1 + options.gamma)


def sadl_derivative(log_p: torch.Tensor, options: Any) -> torch.Tensor:
    alpha, gamma, p = options.alpha, options.gamma, log_p.exp()
    raw = -torch.expm1(log_p)
    r = raw.clamp_min(torch.finfo(log_p.dtype).tiny)  # 1 − p
    dr = torch.where(raw >= r, -p, torch.zeros_like(p))
    q = r.pow(alpha) * p
    dq = (alpha * r.pow(alpha - 1) * dr if alpha != 0 else torch.zeros_like(p)) * p + r.pow(alpha) * p
    return -(2 + gamma) / (q + 1 + gamma).pow(2) * dq


# -- region statistics --------------------------------------------------------------------------------------------
def groups_of(tokens: TokenProbs, group: str) -> tuple[torch.Tensor, int]:
    """(group index [N], G): each sequence its own group (``"sequence"``), or one group for the batch."""
    if group == "sequence":
        return tokens.seq, tokens.n_seq
    return torch.zeros_like(tokens.seq), 1


def sum_by(index: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """``out[g] = Σ_{i: index[i] = g} values[i]`` (``[size, ...]``). One group is a plain sum: besides being cheaper,
    torch.compile's CPU code generator rejects a scatter of a data-dependent count of rows into one row."""
    if size == 1:
        return values.sum(0, keepdim=True)
    return values.new_zeros((size, *values.shape[1:])).index_add(0, index, values)


def group_sizes(group: torch.Tensor, n_groups: int, like: torch.Tensor) -> torch.Tensor:
    """Valid tokens per group, ``[G]`` in ``like``'s dtype."""
    return sum_by(group, torch.ones_like(group, dtype=like.dtype), n_groups)


class RegionStats(NamedTuple):
    """Per group g and gathered class k, ``[G, K]``; additive over tokens (micro-batches and processes sum them)."""

    counts: torch.Tensor  # n_c: how often c is a target in the group
    intersection: torch.Tensor  # I_c = Σ_{i: y_i = c} p_i[c]   (soft true positives)
    mass: torch.Tensor  # P_c = Σ_i p_i[c]                 (soft predicted size)
    outside: torch.Tensor  # [G] Σ_i (1 − Σ_k p_i[k]): mass outside the gathered classes


def region_stats(tokens: TokenProbs, group: torch.Tensor, n_groups: int, options: Any = None) -> RegionStats:
    """The sums every Dice-family loss is built from (no loop over groups or classes)."""
    probs, target_k = tokens.probs, tokens.target_class  # [N, K], [N]
    n_cls = probs.shape[1]
    pair = group * n_cls + target_k  # [N] flat (group, class) index
    ones = torch.ones_like(tokens.log_p_target)
    counts = ones.new_zeros(n_groups * n_cls).index_add(0, pair, ones).view(n_groups, n_cls)  # [G, K]
    p_target = tokens.log_p_target.exp()  # [N]
    intersection = ones.new_zeros(n_groups * n_cls).index_add(0, pair, p_target).view(n_groups, n_cls)  # [G, K]
    mass = sum_by(group, probs, n_groups)  # [G, K]
    outside = sum_by(group, 1 - probs.sum(1), n_groups)  # [G]
    return RegionStats(counts, intersection, mass, outside)


def _present(stats: RegionStats, classes: str) -> torch.Tensor:
    """The (group, class) pairs that enter the class mean: present in the group, or every gathered class."""
    present = stats.counts > 0  # [G, K]
    return present if classes == "present" else torch.ones_like(present)


def _score_mean(
    stats: RegionStats, numerator: torch.Tensor, denominator: torch.Tensor, classes: str, gamma: float
) -> torch.Tensor:
    """Per group, the mean over its counted classes of ``(1 − num/den)^γ`` (``[G]``)."""
    counted = _present(stats, classes)  # [G, K]
    # Uncounted pairs get 0/1: they must neither count nor put a 0/0 into the gradient.
    numerator = torch.where(counted, numerator, torch.zeros_like(numerator))
    denominator = torch.where(counted, denominator, torch.ones_like(denominator))
    per_class = 1 - numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)  # [G, K]
    if gamma != 1.0:  # clamped so (·)^γ with γ < 1 keeps a finite gradient at a perfect score
        per_class = per_class.clamp_min(torch.finfo(per_class.dtype).tiny).pow(gamma)
    weight = counted.to(per_class.dtype)
    return (per_class * weight).sum(1) / weight.sum(1).clamp_min(1)  # [G]


def dice_score(stats: RegionStats, options: Any) -> torch.Tensor:
    s = options.smooth
    return _score_mean(stats, 2 * stats.intersection + s, stats.counts + stats.mass + s, options.classes, 1.0)


def jaccard_score(stats: RegionStats, options: Any) -> torch.Tensor:
    s, i = options.smooth, stats.intersection
    return _score_mean(stats, i + s, stats.counts + stats.mass - i + s, options.classes, 1.0)


def _tversky_terms(stats: RegionStats, options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    i, s = stats.intersection, options.smooth
    false_pos, false_neg = stats.mass - i, stats.counts - i  # [G, K]
    return i + s, i + options.alpha * false_pos + options.beta * false_neg + s


def tversky_score(stats: RegionStats, options: Any) -> torch.Tensor:
    return _score_mean(stats, *_tversky_terms(stats, options), options.classes, 1.0)


def focal_tversky_score(stats: RegionStats, options: Any) -> torch.Tensor:
    return _score_mean(stats, *_tversky_terms(stats, options), options.classes, options.gamma)


def gdice_score(stats: RegionStats, options: Any) -> torch.Tensor:
    counts, present = stats.counts, stats.counts > 0  # [G, K]
    power = {"square": 2.0, "simple": 1.0, "uniform": 0.0}[options.w_type]
    weights = torch.where(present, counts.clamp_min(1).pow(-power), torch.zeros_like(counts))  # [G, K] w_c
    numerator = 2 * (weights * stats.intersection).sum(1) + options.smooth  # [G]
    denominator = (weights * (counts + stats.mass)).sum(1) + options.smooth  # [G]
    if options.classes == "all":
        # Absent classes weigh w_max (MONAI's rule for infinite weights); their P_c sum to the mass outside the
        # group's present classes: outside the gathered ones, plus gathered classes absent from this group.
        absent_mass = stats.outside + (stats.mass * (~present).to(stats.mass.dtype)).sum(1)  # [G]
        largest = torch.cat([weights, weights.new_zeros(weights.shape[0], 1)], 1).amax(1)  # [G] w_max (0 if K = 0)
        denominator = denominator + largest * absent_mass
    return 1 - numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)


# -- Lovász-Softmax -----------------------------------------------------------------------------------------------
class LovaszStats(NamedTuple):
    """Lovász's statistics are the tokens themselves (concatenated across micro-batches and processes)."""

    probs: torch.Tensor  # [N, K]
    target_class: torch.Tensor  # [N]
    group: torch.Tensor  # [N]


def lovasz_stats(tokens: TokenProbs, group: torch.Tensor, n_groups: int, options: Any = None) -> LovaszStats:
    return LovaszStats(tokens.probs, tokens.target_class, group)


@torch.library.custom_op("segloss::lovasz_order", mutates_args=())
def _lovasz_order_op(
    probs: torch.Tensor, target: torch.Tensor, group: torch.Tensor, prune: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every (group, class) pair with the class present in the group: the tokens of the group whose errors can
    carry a Lovász gradient, in decreasing order of error (``[P, R]`` token indices, N = padding), and the pairs'
    group and class (``[P]`` each).

    Past a class's last foreground token in sorted order the Jaccard index stays 1, so every error smaller than its
    smallest foreground error has zero weight. Keeping the top R = max_pair #{e ≥ min fg error} per pair is exact,
    and much cheaper than a full sort once predictions separate the classes.
    """
    n_tokens, n_cls = probs.shape
    if n_tokens == 0:
        return target.new_zeros((0, 0)), target.new_zeros(0), target.new_zeros(0)
    pairs = torch.unique(group * n_cls + target)  # [P] (group, class) pairs present
    pair_group, pair_class = pairs // n_cls, pairs % n_cls
    order = torch.argsort(group, stable=True)  # tokens grouped
    sizes = torch.bincount(group)  # tokens per group
    starts = sizes.cumsum(0) - sizes
    width = int(sizes.max())  # L: the longest group
    slot = torch.arange(width, device=probs.device)
    inside = slot[None, :] < sizes[pair_group][:, None]  # [P, L]
    index = torch.where(inside, order[(starts[pair_group][:, None] + slot).clamp_max(n_tokens - 1)], n_tokens)
    padded_probs = torch.cat([probs, probs.new_zeros(1, n_cls)])  # row N: padding
    padded_target = torch.cat([target, target.new_full((1,), -1)])
    picked = padded_probs[index, pair_class[:, None]]  # [P, L]
    fg = padded_target[index] == pair_class[:, None]
    errors = torch.where(inside, torch.where(fg, 1 - picked, picked), torch.full_like(picked, -1.0))  # pads last
    min_fg = torch.where(fg, errors, torch.full_like(errors, torch.inf)).amin(1, keepdim=True)  # [P, 1]
    keep = int((errors >= min_fg).sum(1).max())  # R
    if not prune or keep > width // 2:
        _, ranked = errors.sort(dim=1, descending=True)  # [P, L]
    else:
        _, ranked = errors.topk(keep, dim=1)  # [P, R], sorted
    return index.gather(1, ranked), pair_group, pair_class


@_lovasz_order_op.register_fake
def _(probs, target, group, prune):
    ctx = torch.library.get_ctx()
    n_pairs, width = ctx.new_dynamic_size(), ctx.new_dynamic_size()
    return target.new_empty((n_pairs, width)), target.new_empty(n_pairs), target.new_empty(n_pairs)


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. sorted errors, per row. ``[P, R] → [P, R]``."""
    gts = fg_sorted.sum(1, keepdim=True)  # [P, 1]
    intersection = gts - fg_sorted.cumsum(1)  # [P, R]
    union = gts + (1 - fg_sorted).cumsum(1)  # [P, R], ≥ 1 since every pair's class is present
    jaccard = 1 - intersection / union.clamp_min(1)
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def lovasz_score(stats: LovaszStats, n_groups: int, options: Any) -> torch.Tensor:
    """Lovász-Softmax per group ``[G]``: the mean over classes of ``Σ_k e_(k) g_k(c)`` (present classes, or every
    gathered class — an absent class's loss is its largest probability in the group, Berman et al.'s ``all``)."""
    probs, target, group = stats  # [N, K], [N], [N]
    n_tokens, n_cls = probs.shape
    index, pair_group, pair_class = _lovasz_order_op(probs.detach(), target, group, _PRUNE_LOVASZ)  # [P, R]
    inside = index < n_tokens
    padded_probs = torch.cat([probs, probs.new_zeros(1, n_cls)])
    picked = padded_probs[index, pair_class[:, None]]  # [P, R]
    fg = (torch.cat([target, target.new_full((1,), -1)])[index] == pair_class[:, None]) & inside
    errors = torch.where(inside, torch.where(fg, 1 - picked, picked), torch.zeros_like(picked))
    per_pair = (errors * _lovasz_grad(fg.to(probs.dtype))).sum(1)  # [P]
    per_group = sum_by(pair_group, per_pair, n_groups)  # [G] sum over present classes
    if options.classes == "all":
        counts = probs.new_zeros(n_groups * n_cls).index_add(0, group * n_cls + target, torch.ones_like(probs[:, 0]))
        absent = (counts.view(n_groups, n_cls) == 0).to(probs.dtype)  # [G, K]
        largest = probs.new_zeros(n_groups, n_cls).scatter_reduce(
            0, group[:, None].expand(-1, n_cls), probs, "amax", include_self=True
        )  # [G, K] max_i p_i[c] over the group (probabilities are ≥ 0)
        return (per_group + (largest * absent).sum(1)) / max(n_cls, 1)
    n_pairs = sum_by(pair_group, torch.ones_like(per_pair), n_groups)
    return per_group / n_pairs.clamp_min(1)
