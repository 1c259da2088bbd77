import torch

from segloss.losses import _gather
from segloss.losses._gather import log_probs_at


def _reference(logits, rows, cols, shared):
    log_p = torch.log_softmax(logits, -1)
    return log_p[rows[:, None], cols], log_p[rows[:, None], shared[None, :]]


def _check(logits, rows, cols, shared, generator):
    picked = log_probs_at(logits, rows, cols, shared)
    expected = _reference(logits, rows, cols, shared)
    weights = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in picked]
    (grad,) = torch.autograd.grad(sum((p * w).sum() for p, w in zip(picked, weights, strict=True)), logits)
    (grad_ref,) = torch.autograd.grad(sum((p * w).sum() for p, w in zip(expected, weights, strict=True)), logits)
    for actual, wanted in zip(picked, expected, strict=True):
        torch.testing.assert_close(actual, wanted)
    torch.testing.assert_close(grad, grad_ref)
    return grad


def test_per_row_and_shared_columns_match_log_softmax(generator, monkeypatch):
    monkeypatch.setattr(_gather, "_CHUNK_ELEMENTS", 16)  # several row chunks even on a tiny input
    logits = torch.randn(7, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 2, 3, 6])
    grad = _check(logits, rows, torch.tensor([[1, 0], [0, 0], [4, 2], [4, 4]]), torch.tensor([4, 1]), generator)
    assert torch.count_nonzero(grad[[1, 4, 5]]) == 0  # rows outside the loss get exact zeros


def test_scattered_rows_take_the_gather_path(generator, monkeypatch):
    monkeypatch.setattr(_gather, "_CHUNK_ELEMENTS", 10)  # two rows per chunk; rows 0 and 9 span 10 rows
    logits = torch.randn(10, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    assert not _gather._uses_span(0, 2, 0, 10)
    grad = _check(logits, torch.tensor([0, 9]), torch.tensor([[1], [3]]), torch.tensor([2, 3]), generator)
    assert torch.count_nonzero(grad[1:9]) == 0


def test_without_shared_columns_and_with_no_rows(generator):
    logits = torch.randn(4, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    per_row, shared = log_probs_at(logits, torch.tensor([1, 3]), torch.tensor([[0], [5]]))
    assert shared.shape == (2, 0)
    torch.testing.assert_close(per_row[:, 0], torch.log_softmax(logits, -1)[[1, 3], [0, 5]])
    empty, _ = log_probs_at(logits, torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long))
    assert empty.shape == (0, 1)


def test_gradcheck(generator):
    logits = torch.randn(4, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    rows, cols, shared = torch.tensor([1, 3]), torch.tensor([[0, 5], [2, 2]]), torch.tensor([1, 4])
    assert torch.autograd.gradcheck(lambda z: log_probs_at(z, rows, cols, shared), (logits,))


def test_half_precision_returns_float32_with_half_gradient(generator):
    logits = torch.randn(3, 8, generator=generator).to(torch.bfloat16).requires_grad_()
    per_row, shared = log_probs_at(logits, torch.tensor([0, 2]), torch.tensor([[1], [7]]), torch.tensor([3]))
    (per_row.sum() + shared.sum()).backward()
    assert per_row.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
