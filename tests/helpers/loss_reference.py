"""Straightforward float64 references for the losses: loops over tokens and classes, no tricks.

They follow the papers' definitions literally (Lin et al. 2017; Li et al. 2020; Sudre et al. 2017 with MONAI's
rule for absent classes; Berman et al. 2018's ``lovasz_softmax_flat`` with ``classes="present"``) and are
differentiable, so gradients can be compared too.
"""

from __future__ import annotations

import torch


def _valid(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100):
    """Per sequence: list of (log-probabilities [n, V], targets [n]) of its valid tokens, in float64."""
    out = []
    for b in range(logits.shape[0]):
        keep = [t for t in range(labels.shape[1]) if int(labels[b, t]) != ignore_index]
        log_probs = torch.stack([torch.log_softmax(logits[b, t].double(), -1) for t in keep]) if keep else None
        out.append((log_probs, [int(labels[b, t]) for t in keep]))
    return out


def _zero(logits):
    return (logits.double() * 0).sum()


def ref_cross_entropy(logits, labels):
    terms = [-lp[i, y] for lp, ys in _valid(logits, labels) for i, y in enumerate(ys)]
    return torch.stack(terms).mean() if terms else _zero(logits)


def ref_focal(logits, labels, gamma=2.0):
    pairs = [(lp, i, y) for lp, ys in _valid(logits, labels) for i, y in enumerate(ys)]
    terms = [-((1 - lp[i, y].exp()) ** gamma) * lp[i, y] for lp, i, y in pairs]
    return torch.stack(terms).mean() if terms else _zero(logits)


def ref_sadl(logits, labels, alpha=1.0, gamma=1.0):
    terms = []
    for lp, ys in _valid(logits, labels):
        for i, y in enumerate(ys):
            q = (1 - lp[i, y].exp()) ** alpha * lp[i, y].exp()
            terms.append(1 - (2 * q + gamma) / (q + 1 + gamma))
    return torch.stack(terms).mean() if terms else _zero(logits)


def ref_gdice(logits, labels, smooth=1e-5):
    per_seq = []
    for lp, ys in _valid(logits, labels):
        if not ys:
            continue
        p = lp.exp()
        vocab = p.shape[1]
        counts = [ys.count(c) for c in range(vocab)]
        w_max = max(1.0 / n**2 for n in counts if n > 0)
        num = torch.zeros((), dtype=torch.float64)
        den = torch.zeros((), dtype=torch.float64)
        for c in range(vocab):
            w = 1.0 / counts[c] ** 2 if counts[c] > 0 else w_max
            inter = sum((p[i, c] for i, y in enumerate(ys) if y == c), torch.zeros((), dtype=torch.float64))
            num = num + w * inter
            den = den + w * (counts[c] + p[:, c].sum())
        per_seq.append(1 - (2 * num + smooth) / (den + smooth))
    return torch.stack(per_seq).mean() if per_seq else _zero(logits)


def _lovasz_grad(gt_sorted):
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def ref_lovasz(logits, labels):
    seqs = [(lp, ys) for lp, ys in _valid(logits, labels) if ys]
    if not seqs:
        return _zero(logits)
    probs = torch.cat([lp.exp() for lp, _ in seqs])
    targets = torch.tensor([y for _, ys in seqs for y in ys])
    losses = []
    for c in range(probs.shape[1]):  # Berman et al.'s loop over classes, classes="present"
        fg = (targets == c).double()
        if fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


def _ref_overlap(logits, labels, score, gamma=1.0):
    """Per sequence, mean over present classes of (1 − score(I, n, P))^γ; then over sequences. Plain loops."""
    per_seq = []
    for lp, ys in _valid(logits, labels):
        if not ys:
            continue
        p = lp.exp()
        per_class = []
        for c in sorted(set(ys)):
            n = float(ys.count(c))
            inter = sum((p[i, c] for i, y in enumerate(ys) if y == c), torch.zeros((), dtype=torch.float64))
            mass = p[:, c].sum()
            per_class.append((1 - score(inter, n, mass)) ** gamma)
        per_seq.append(torch.stack(per_class).mean())
    return torch.stack(per_seq).mean() if per_seq else _zero(logits)


def ref_dice(logits, labels, smooth=1e-5):
    return _ref_overlap(logits, labels, lambda i, n, m: (2 * i + smooth) / (n + m + smooth))


def ref_jaccard(logits, labels, smooth=1e-5):
    return _ref_overlap(logits, labels, lambda i, n, m: (i + smooth) / (n + m - i + smooth))


def ref_tversky(logits, labels, alpha=0.5, beta=0.5, smooth=1e-5, gamma=1.0):
    def score(i, n, m):  # α on false positives (m − i), β on false negatives (n − i), as MONAI and smp
        return (i + smooth) / (i + alpha * (m - i) + beta * (n - i) + smooth)

    return _ref_overlap(logits, labels, score, gamma)


def ref_focal_tversky(logits, labels, alpha=0.5, beta=0.5, gamma=0.75, smooth=1e-5):
    return ref_tversky(logits, labels, alpha, beta, smooth, gamma)
