import torch

from segloss.losses import _gather
from segloss.losses._gather import log_probs_at


def test_matches_log_softmax_indexing_per_row_and_shared_columns(generator, monkeypatch):
    monkeypatch.setattr(_gather, "_CHUNK_ELEMENTS", 16)  # several row chunks even on a tiny input
    logits = torch.randn(7, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 2, 3, 6])
    for cols in (torch.tensor([[1], [0], [4], [4]]), torch.tensor([4, 1])):
        picked = log_probs_at(logits, rows, cols)
        full = torch.log_softmax(logits, -1)[rows[:, None], cols if cols.dim() == 2 else cols[None]]
        weights = torch.randn(picked.shape, generator=generator, dtype=torch.float64)
        (grad,) = torch.autograd.grad((picked * weights).sum(), logits)
        (expected,) = torch.autograd.grad((full * weights).sum(), logits)
        torch.testing.assert_close(picked, full)
        torch.testing.assert_close(grad, expected)
        assert torch.count_nonzero(grad[[1, 4, 5]]) == 0


def test_scattered_rows_take_the_gather_path(generator, monkeypatch):
    monkeypatch.setattr(_gather, "_CHUNK_ELEMENTS", 10)  # two rows per chunk; rows 0 and 9 span 10 rows
    logits = torch.randn(10, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    rows, cols = torch.tensor([0, 9]), torch.tensor([[1, 2], [3, 3]])
    assert not _gather._uses_span(0, 2, 0, 10)
    (grad,) = torch.autograd.grad(log_probs_at(logits, rows, cols).sum(), logits)
    (expected,) = torch.autograd.grad(torch.log_softmax(logits, -1)[rows[:, None], cols].sum(), logits)
    torch.testing.assert_close(grad, expected)


def test_gradcheck(generator):
    logits = torch.randn(4, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    rows, cols = torch.tensor([1, 3]), torch.tensor([[0, 5], [2, 2]])
    assert torch.autograd.gradcheck(lambda z: log_probs_at(z, rows, cols), (logits,))


def test_half_precision_returns_float32_with_half_gradient(generator):
    logits = torch.randn(3, 8, generator=generator).to(torch.bfloat16).requires_grad_()
    out = log_probs_at(logits, torch.tensor([0, 2]), torch.tensor([[1], [7]]))
    out.sum().backward()
    assert out.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
