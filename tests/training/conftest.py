"""TEMPORARY stand-ins for segloss.losses APIs that have not landed yet (removed once they do)."""

from __future__ import annotations

import pytest
import torch

import segloss.losses as losses_mod


def install() -> None:
    if not hasattr(losses_mod, "CombinedLoss"):
        from segloss.losses import functional as F

        fns = {"ce": F.cross_entropy, "focal": F.focal_loss, "sadl": F.self_adjusting_dice_loss,
               "gdice": F.generalized_dice_loss, "lovasz": F.lovasz_softmax_loss}

        def causal_shift(*ts, ignore_index=-100):
            return tuple(torch.cat([t[:, 1:], torch.full_like(t[:, :1], ignore_index)], 1) for t in ts)

        def parse_loss_spec(spec, ce_weight=None):
            if isinstance(spec, dict):
                w = {k: float(v) for k, v in spec.items()}
            elif "=" in spec:
                w = {k.strip(): float(v) for k, v in (p.split("=") for p in spec.split(","))}
            elif spec == "ce":
                w = {"ce": 1.0}
            else:
                cw = 0.6 if ce_weight is None else ce_weight
                w = {"ce": cw, spec: 1 - cw}
            bad = set(w) - set(fns)
            if bad:
                raise ValueError(f"unknown loss {sorted(bad)}; valid: {sorted(fns)}")
            if sum(w.values()) <= 0:
                raise ValueError("weights all zero")
            return {k: v for k, v in w.items() if v > 0}

        class CombinedLoss(torch.nn.Module):
            def __init__(self, weights, options=None):
                super().__init__()
                self.weights, self.options = weights, options or {}

            def components(self, logits, labels, answer_labels):
                out = {}
                for n, w in self.weights.items():
                    out[n] = w * fns[n](logits, labels if n == "ce" else answer_labels, **self.options.get(n, {}))
                out["total"] = sum(out.values())
                return out

            def forward(self, logits, labels, answer_labels):
                return self.components(logits, labels, answer_labels)["total"]

        losses_mod.CombinedLoss, losses_mod.causal_shift = CombinedLoss, causal_shift
        losses_mod.parse_loss_spec, losses_mod.LOSSES = parse_loss_spec, fns


install()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # The tiny models are far too small to gain from intra-op threads; on a shared 2-core machine the extra
    # threads only add contention (a training step runs ~2× faster with one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
