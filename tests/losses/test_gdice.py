import math

import pytest
import torch

from segloss.losses import generalized_dice_loss


def test_hand_computed_two_tokens_two_classes():
    # uniform p over V = 2, labels [0, 1]: n = 1, w = 1, I = 0.5 each, P = 1 each -> 1 − 2·1 / (2 + 2) = 0.5
    logits = torch.zeros(1, 2, 2, dtype=torch.float64)
    value = generalized_dice_loss(logits, torch.tensor([[0, 1]]), smooth=0.0)
    assert value.item() == pytest.approx(0.5, rel=1e-12)


def test_absent_classes_get_the_largest_present_weight():
    # V = 3, one token of class 0 with p = (0.5, 0.25, 0.25): w_0 = 1, absent classes weigh w_max = 1.
    # num = 2 · 0.5; den = 1 · (1 + 0.5) + 1 · 0.5 -> 1 − 1 / 2 = 0.5
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]], dtype=torch.float64))
    assert generalized_dice_loss(logits, torch.tensor([[0]]), smooth=0.0).item() == pytest.approx(0.5, rel=1e-12)


def test_mass_on_absent_classes_is_penalised_and_has_a_real_gradient():
    # The research code weighted absent classes ~1e20, which made the gradient ~1e-22: it did nothing.
    labels = torch.tensor([[0, 0, 1]])
    on_present = torch.log(torch.tensor([[[0.7, 0.3, 1e-9]] * 3], dtype=torch.float64))
    on_absent = torch.log(torch.tensor([[[0.7, 0.0 + 1e-9, 0.3]] * 3], dtype=torch.float64))
    assert generalized_dice_loss(on_present, labels) < generalized_dice_loss(on_absent, labels)
    logits = torch.zeros(1, 3, 50, dtype=torch.float64, requires_grad=True)
    generalized_dice_loss(logits, labels).backward()
    assert logits.grad.abs().max() > 1e-3


def test_per_sequence_mean():
    logits = torch.zeros(2, 2, 2, dtype=torch.float64)
    labels = torch.tensor([[0, 1], [0, -100]])
    first = generalized_dice_loss(logits[:1], labels[:1])
    second = generalized_dice_loss(logits[1:], labels[1:])
    both = generalized_dice_loss(logits, labels)
    assert both.item() == pytest.approx((first.item() + second.item()) / 2, rel=1e-12)
    assert not math.isclose(first.item(), second.item())


def test_perfect_prediction_is_near_zero():
    labels = torch.tensor([[2, 0, 2]])
    logits = 1e4 * torch.nn.functional.one_hot(labels, 4).double()
    assert generalized_dice_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-9)
