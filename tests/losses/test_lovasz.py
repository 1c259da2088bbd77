import pytest
import torch

from segloss.losses import lovasz_softmax_loss


def test_hand_computed_value():
    # class 0: errors sorted (0.4 bg, 0.2 fg), Lovász gradient (0.5, 0.5) -> 0.3
    # class 1: errors sorted (0.4 fg, 0.2 bg), Lovász gradient (1, 0)     -> 0.4      mean = 0.35
    logits = torch.log(torch.tensor([[[0.8, 0.2], [0.4, 0.6]]], dtype=torch.float64))
    assert lovasz_softmax_loss(logits, torch.tensor([[0, 1]])).item() == pytest.approx(0.35, rel=1e-12)


def test_perfect_one_hot_prediction_is_zero():
    labels = torch.tensor([[3, 1, -100, 3], [0, 3, 1, -100]])
    logits = 1e4 * torch.nn.functional.one_hot(labels.clamp_min(0), 5).double()
    assert lovasz_softmax_loss(logits, labels).item() == 0.0


def test_tokens_pool_across_the_batch():
    # Lovász sees all valid tokens of the batch as one image: splitting differently does not change it.
    logits = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2], [1, 1, 3]])
    flat = lovasz_softmax_loss(logits.reshape(1, 6, 4), labels.reshape(1, 6))
    assert lovasz_softmax_loss(logits, labels).item() == pytest.approx(flat.item(), rel=1e-12)


def test_only_present_classes_count():
    # Adding vocabulary entries that never appear (with tiny probability) barely moves the loss.
    logits = torch.log(torch.tensor([[[0.8, 0.2], [0.4, 0.6]]], dtype=torch.float64))
    wider = torch.cat([logits, torch.full((1, 2, 50), -40.0, dtype=torch.float64)], dim=-1)
    labels = torch.tensor([[0, 1]])
    assert lovasz_softmax_loss(wider, labels).item() == pytest.approx(0.35, rel=1e-9)


def test_pruned_top_k_path_matches_the_full_sort(generator):
    from helpers.loss_reference import ref_lovasz

    from segloss.losses.core import _lovasz_order_op

    labels = torch.randint(0, 6, (3, 10), generator=generator)
    # V = 400 ≫ 6 classes: a foreground error sums 399 probabilities, a background error is one of them.
    noise = 0.5 * torch.randn(3, 10, 400, generator=generator)
    logits = (8.0 * torch.nn.functional.one_hot(labels, 400) + noise).double()
    logits.requires_grad_()
    classes, target = labels.unique(return_inverse=True)
    probs = torch.softmax(logits.detach().reshape(-1, 400), -1)[:, classes]
    kept, _, _ = _lovasz_order_op(probs, target.reshape(-1), torch.zeros(30, dtype=torch.long), True)
    assert kept.shape[1] < 15  # the top-k path, not the full sort over 30 tokens
    value = lovasz_softmax_loss(logits, labels)
    expected = ref_lovasz(logits, labels)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(torch.autograd.grad(value, logits)[0], torch.autograd.grad(expected, logits)[0])
