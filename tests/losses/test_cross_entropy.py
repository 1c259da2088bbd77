import math

import pytest
import torch

from segloss.losses import cross_entropy


def test_uniform_logits_give_log_vocab():
    logits = torch.zeros(1, 3, 4, dtype=torch.float64)
    labels = torch.tensor([[0, -100, 3]])
    assert cross_entropy(logits, labels).item() == pytest.approx(math.log(4), rel=1e-15)


def test_hand_computed_mean_over_valid_tokens_only():
    # token 0: p(target) = 0.8; token 1 ignored; token 2: p(target) = 0.25.
    logits = torch.log(torch.tensor([[[0.8, 0.2], [0.5, 0.5], [0.75, 0.25]]], dtype=torch.float64))
    labels = torch.tensor([[0, -100, 1]])
    expected = -(math.log(0.8) + math.log(0.25)) / 2
    assert cross_entropy(logits, labels).item() == torch.tensor(expected, dtype=torch.float64).item()


def test_matches_torch_cross_entropy(generator):
    logits = torch.randn(2, 5, 9, generator=generator)
    labels = torch.randint(0, 9, (2, 5), generator=generator)
    labels[0, 1] = -100
    torch.testing.assert_close(
        cross_entropy(logits, labels), torch.nn.functional.cross_entropy(logits.view(-1, 9), labels.view(-1))
    )
