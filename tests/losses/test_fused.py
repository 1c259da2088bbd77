"""fused_linear_loss / FusedLinearCombinedLoss against the materialised path (matmul + CombinedLoss)."""

from __future__ import annotations

import pytest
import torch

from segloss.losses import LOSSES, CombinedLoss, FusedLinearCombinedLoss, fused_linear_loss
from segloss.losses import fused as fused_module

TASK_LOSSES = [name for name in LOSSES if name != "ce"]


def _problem(gen: torch.Generator, dtype: torch.dtype, *, b: int = 3, t: int = 7, h: int = 5, v: int = 13):
    hidden = torch.randn(b, t, h, generator=gen, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=gen, dtype=dtype) / h**0.5).requires_grad_()
    bias = (0.1 * torch.randn(v, generator=gen, dtype=dtype)).requires_grad_()
    labels = torch.randint(0, v, (b, t), generator=gen)
    labels[torch.rand(b, t, generator=gen) < 0.2] = -100
    labels[1, :] = -100  # a sequence without targets
    answer_labels = labels.clone()
    answer_labels[:, :3] = -100  # the prompt
    answer_labels[2, 3] = 4  # an answer token where `labels` is masked
    return hidden, weight, bias, labels, answer_labels


def _materialised(weights, hidden, weight, bias, labels, answer_labels, options=None):
    return CombinedLoss(weights, options)(hidden @ weight.t() + bias, labels, answer_labels)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float(((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).detach())


def _compare(weights, gen, dtype, tol, options=None, chunk_size=2):
    inputs = _problem(gen, dtype)
    hidden, weight, bias, labels, answer_labels = inputs
    value = fused_linear_loss(
        hidden,
        weight,
        labels,
        answer_labels,
        weights=weights,
        options=options,
        lm_head_bias=bias,
        chunk_size=chunk_size,
    )
    expected = _materialised(weights, *inputs, options=options)
    grads = torch.autograd.grad(value, (hidden, weight, bias))
    expected_grads = torch.autograd.grad(expected, (hidden, weight, bias))
    assert value.dtype == expected.dtype
    assert _relative_error(value, expected) < tol
    for name, g, e in zip(("hidden", "weight", "bias"), grads, expected_grads, strict=True):
        assert e.abs().max() > 0, name
        assert _relative_error(g, e) < tol, name


@pytest.mark.parametrize("name", TASK_LOSSES)
def test_each_loss_with_ce_matches_the_materialised_path_float64(name, generator):
    _compare({"ce": 0.6, name: 0.4}, generator, torch.float64, 1e-10)


@pytest.mark.parametrize("name", TASK_LOSSES)
def test_each_loss_alone_matches_the_materialised_path_float32(name, generator):
    _compare({name: 1.0}, generator, torch.float32, 1e-5)


def test_all_losses_at_once_with_options_and_one_chunk(generator):
    weights = {name: 0.1 for name in LOSSES}
    options = {"focal": {"gamma": 1.0}, "tversky": {"alpha": 0.3, "beta": 0.7}, "gdice": {"w_type": "simple"}}
    _compare(weights, generator, torch.float64, 1e-10, options=options, chunk_size=None)


def test_gradcheck(generator):
    hidden, weight, bias, labels, answer_labels = _problem(generator, torch.float64, b=3, t=5, h=3, v=6)
    labels[0, 0] = 2

    def loss(h, w, b):
        weights = {"ce": 0.4, "focal_tversky": 0.3, "lovasz": 0.3}
        return fused_linear_loss(h, w, labels, answer_labels, weights=weights, lm_head_bias=b, chunk_size=3)

    assert torch.autograd.gradcheck(loss, (hidden, weight, bias), eps=1e-6, atol=1e-5)


def test_logits_are_only_ever_computed_one_chunk_at_a_time(generator, monkeypatch):
    shapes: list[tuple[int, ...]] = []
    original = fused_module._chunk_logits

    def recording(hidden, weight, bias, buffer):
        out = original(hidden, weight, bias, buffer)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(fused_module, "_chunk_logits", recording)
    hidden, weight, _, labels, answer_labels = _problem(generator, torch.float64)
    loss = fused_linear_loss(hidden, weight, labels, answer_labels, weights={"ce": 0.5, "lovasz": 0.5}, chunk_size=4)
    loss.backward()
    n_rows = int(((labels != -100) | (answer_labels != -100)).sum())
    assert all(rows <= 4 for rows, _ in shapes)
    assert sum(rows for rows, _ in shapes) == 2 * n_rows  # each valid row once forward, once backward


def test_default_chunk_follows_the_vocabulary(monkeypatch):
    monkeypatch.setattr(fused_module, "CHUNK_ELEMENTS", 100)
    rows = torch.arange(10)
    hidden = torch.randn(10, 3, dtype=torch.float64)
    weight = torch.randn(40, 3, dtype=torch.float64)
    calls: list[int] = []
    original = fused_module._chunk_logits
    monkeypatch.setattr(
        fused_module, "_chunk_logits", lambda h, w, b, z: calls.append(h.shape[0]) or original(h, w, b, z)
    )
    fused_module.linear_log_probs_at(hidden, weight, None, rows, torch.zeros(10, 1, dtype=torch.long), None)
    assert calls == [2, 2, 2, 2, 2]  # 100 // 40 rows per chunk


def test_no_valid_token_gives_zero_and_zero_gradients(generator):
    hidden, weight, bias, labels, _ = _problem(generator, torch.float64)
    masked = torch.full_like(labels, -100)
    value = fused_linear_loss(hidden, weight, masked, masked, weights={"ce": 0.6, "gdice": 0.4}, lm_head_bias=bias)
    grads = torch.autograd.grad(value, (hidden, weight, bias))
    assert value.item() == 0.0
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_without_bias_and_components(generator):
    hidden, weight, _, labels, answer_labels = _problem(generator, torch.float64)
    module = FusedLinearCombinedLoss({"ce": 0.6, "dice": 0.4})
    terms = module.components(hidden, weight, labels, answer_labels)
    expected = CombinedLoss({"ce": 0.6, "dice": 0.4}).components(hidden @ weight.t(), labels, answer_labels)
    assert set(terms) == set(expected) == {"ce", "dice", "total"}
    for name in terms:
        torch.testing.assert_close(terms[name], expected[name], rtol=1e-12, atol=0)


def test_only_hidden_needs_a_gradient(generator):
    # A frozen head (LoRA on the body): no weight gradient is built, and the hidden gradient is unchanged.
    hidden, weight, bias, labels, answer_labels = _problem(generator, torch.float64)
    frozen_w, frozen_b = weight.detach(), bias.detach()
    value = fused_linear_loss(hidden, frozen_w, labels, answer_labels, weights={"lovasz": 1.0}, lm_head_bias=frozen_b)
    (grad,) = torch.autograd.grad(value, hidden)
    expected = _materialised({"lovasz": 1.0}, hidden, frozen_w, frozen_b, labels, answer_labels)
    torch.testing.assert_close(grad, torch.autograd.grad(expected, hidden)[0], rtol=1e-10, atol=0)


def test_bfloat16_is_computed_in_float32(generator):
    hidden, weight, bias, labels, answer_labels = _problem(generator, torch.float32)
    half = [x.detach().to(torch.bfloat16).requires_grad_() for x in (hidden, weight, bias)]
    value = fused_linear_loss(
        *half[:2], labels, answer_labels, weights={"ce": 0.6, "focal": 0.4}, lm_head_bias=half[2]
    )
    expected = _materialised({"ce": 0.6, "focal": 0.4}, *half, labels, answer_labels)
    grads = torch.autograd.grad(value, half)
    assert value.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in grads)
    torch.testing.assert_close(value, expected, rtol=1e-3, atol=1e-3)
    for g, e in zip(grads, torch.autograd.grad(expected, half), strict=True):
        torch.testing.assert_close(g.float(), e.float(), rtol=5e-2, atol=5e-3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, w, b, y, a: (h[0], w, b, y, a), r"hidden must be a float tensor \[B, T, H\]"),
        (lambda h, w, b, y, a: (h, w[:, :3], b, y, a), r"lm_head_weight must have shape \[V, H\] with H = 5"),
        (lambda h, w, b, y, a: (h, w.float(), b, y, a), "lm_head_weight dtype torch.float32 differs"),
        (lambda h, w, b, y, a: (h, w, b[:3], y, a), r"lm_head_bias must have shape \[V\] = \(13,\)"),
        (lambda h, w, b, y, a: (h, w, b, y[:, :2], a), r"^labels must have shape \[B, T\] = \(3, 7\)"),
        (lambda h, w, b, y, a: (h, w, b, y, a > 0), "answer_labels must be an integer tensor"),
        (lambda h, w, b, y, a: (h, w, b, y, a.clamp_min(0) + 13), "answer_labels value 13 is outside the vocabulary"),
    ],
)
def test_bad_inputs(change, message, generator):
    hidden, weight, bias, labels, answer_labels = change(*_problem(generator, torch.float64))
    with pytest.raises(ValueError, match=message):
        fused_linear_loss(hidden, weight, labels, answer_labels, weights={"ce": 0.5, "focal": 0.5}, lm_head_bias=bias)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
def test_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        FusedLinearCombinedLoss({"ce": 1.0}, chunk_size=chunk_size)


def test_token_local_objectives_take_one_pass(generator, monkeypatch):
    # ce, focal, sadl: the gradient is computed while each chunk's z is at hand (3 head matmuls, like Liger's).
    shapes: list[int] = []
    original = fused_module._chunk_logits
    monkeypatch.setattr(
        fused_module, "_chunk_logits", lambda h, w, b, z: shapes.append(h.shape[0]) or original(h, w, b, z)
    )
    hidden, weight, bias, labels, answer_labels = _problem(generator, torch.float64)
    weights = {"ce": 0.5, "focal": 0.3, "sadl": 0.2}
    module = FusedLinearCombinedLoss(weights, chunk_size=4)
    assert module.one_pass and not FusedLinearCombinedLoss({"ce": 0.5, "dice": 0.5}).one_pass
    terms = module.components(hidden, weight, labels, answer_labels, bias)
    grads = torch.autograd.grad(terms["total"], (hidden, weight, bias))
    n_rows = int(((labels != -100) | (answer_labels != -100)).sum())
    assert sum(shapes) == n_rows and max(shapes) <= 4  # each valid row once, in chunks
    expected = CombinedLoss(weights).components(hidden @ weight.t() + bias, labels, answer_labels)
    for name in expected:  # the terms (for logging) equal the materialised ones; only "total" carries a gradient
        torch.testing.assert_close(terms[name].detach(), expected[name].detach(), rtol=1e-12, atol=0)
    assert not terms["ce"].requires_grad and terms["total"].requires_grad
    for got, want in zip(grads, torch.autograd.grad(expected["total"], (hidden, weight, bias)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
