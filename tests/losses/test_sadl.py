import pytest
import torch

from segloss.losses import self_adjusting_dice_loss


def _logits(*p_targets: float) -> torch.Tensor:
    return torch.log(torch.tensor([[[p, 1 - p] for p in p_targets]], dtype=torch.float64))


def test_hand_computed_value():
    # p = 0.5, α = γ = 1: q = 0.25, loss = 1 − (0.5 + 1) / (0.25 + 2) = 1/3
    assert self_adjusting_dice_loss(_logits(0.5), torch.tensor([[0]])).item() == pytest.approx(1 / 3, rel=1e-12)


def test_alpha_and_gamma_options():
    # p = 0.8, α = 2, γ = 0.5: q = 0.2² · 0.8 = 0.032; loss = 1 − (0.064 + 0.5) / (0.032 + 1.5)
    value = self_adjusting_dice_loss(_logits(0.8), torch.tensor([[0]]), alpha=2.0, gamma=0.5)
    assert value.item() == pytest.approx(1 - 0.564 / 1.532, rel=1e-12)


def test_self_adjusting_factor_is_symmetric_in_certainty():
    # As in the research code: with α = 1 the per-token loss is lowest at p_t = 0.5 and equal at p_t = 0 and 1.
    labels = torch.tensor([[0]])
    at_half = self_adjusting_dice_loss(_logits(0.5), labels)
    assert at_half < self_adjusting_dice_loss(_logits(0.95), labels)
    assert self_adjusting_dice_loss(_logits(0.9), labels).item() == pytest.approx(
        self_adjusting_dice_loss(_logits(0.1), labels).item(), rel=1e-12
    )
