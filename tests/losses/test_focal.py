import math

import pytest
import torch

from segloss.losses import cross_entropy, focal_loss


def test_gamma_zero_equals_cross_entropy(generator):
    logits = torch.randn(3, 4, 10, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 10, (3, 4), generator=generator)
    labels[1, :2] = -100
    torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0), cross_entropy(logits, labels))


def test_hand_computed_value():
    # p_t = 0.8 and 0.25: −((0.2)² log 0.8 + (0.75)² log 0.25) / 2
    logits = torch.log(torch.tensor([[[0.8, 0.2], [0.75, 0.25]]], dtype=torch.float64))
    labels = torch.tensor([[0, 1]])
    expected = -(0.2**2 * math.log(0.8) + 0.75**2 * math.log(0.25)) / 2
    assert focal_loss(logits, labels, gamma=2.0).item() == pytest.approx(expected, rel=1e-12)


def test_down_weights_easy_tokens_relative_to_ce():
    easy = torch.tensor([[[6.0, 0.0, 0.0]]])
    labels = torch.tensor([[0]])
    assert focal_loss(easy, labels) < 0.01 * cross_entropy(easy, labels)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_finite_at_certain_prediction(gamma):
    logits = torch.tensor([[[1e4, -1e4], [-1e4, 1e4]]], requires_grad=True)
    labels = torch.tensor([[0, 0]])  # one certain-right, one certain-wrong token
    value = focal_loss(logits, labels, gamma=gamma)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert value.item() == pytest.approx(1e4, rel=1e-6)  # (−2e4 log-prob) / 2 tokens
