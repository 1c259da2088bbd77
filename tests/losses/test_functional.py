"""Properties every task loss must have: float64 reference, gradients, masking, precision, bad input."""

from __future__ import annotations

import pytest
import torch
from helpers.loss_reference import (
    ref_cross_entropy,
    ref_dice,
    ref_focal,
    ref_focal_tversky,
    ref_gdice,
    ref_jaccard,
    ref_lovasz,
    ref_sadl,
    ref_tversky,
)

from segloss.losses import (
    cross_entropy,
    dice_loss,
    focal_loss,
    focal_tversky_loss,
    generalized_dice_loss,
    jaccard_loss,
    lovasz_softmax_loss,
    self_adjusting_dice_loss,
    tversky_loss,
)

CASES = {
    "ce": (cross_entropy, ref_cross_entropy),
    "focal": (focal_loss, ref_focal),
    "sadl": (self_adjusting_dice_loss, ref_sadl),
    "gdice": (generalized_dice_loss, ref_gdice),
    "lovasz": (lovasz_softmax_loss, ref_lovasz),
    "dice": (dice_loss, ref_dice),
    "jaccard": (jaccard_loss, ref_jaccard),
    "tversky": (tversky_loss, ref_tversky),
    "focal_tversky": (focal_tversky_loss, ref_focal_tversky),
}
NAMES = list(CASES)


def _batch(gen: torch.Generator, b: int = 3, t: int = 6, v: int = 7, scale: float = 3.0, p_ignore: float = 0.3):
    logits = (torch.randn(b, t, v, generator=gen, dtype=torch.float64) * scale).requires_grad_()
    labels = torch.randint(0, v, (b, t), generator=gen)
    labels[torch.rand(b, t, generator=gen) < p_ignore] = -100
    return logits, labels


def _layouts(gen: torch.Generator):
    """Random masks plus the edge cases the issue names."""
    logits, labels = _batch(gen)
    labels[1] = -100  # one all-masked sequence among valid ones
    yield "random-with-masked-sequence", logits, labels
    logits, labels = _batch(gen)
    labels[:] = -100
    labels[2, 4] = 5
    yield "one-valid-token", logits, labels
    logits, labels = _batch(gen, p_ignore=0.2)
    labels[labels != -100] = 3
    yield "one-class", logits, labels
    yield "two-classes-V2", *_batch(gen, v=2)
    yield "large-logits", *_batch(gen, scale=1e4)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_matches_float64_reference_value_and_gradient(name, generator):
    fn, ref = CASES[name]
    for layout, logits, labels in _layouts(generator):
        value = fn(logits, labels)
        (grad,) = torch.autograd.grad(value, logits)
        expected = ref(logits, labels)
        (expected_grad,) = torch.autograd.grad(expected, logits)
        assert value.dtype == torch.float64, layout
        _assert_close(value, expected.detach())
        _assert_close(grad, expected_grad)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name, generator):
    fn, _ = CASES[name]
    logits, labels = _batch(generator, b=2, t=4, v=5, scale=1.0)
    labels[0, 0] = 1  # at least one valid token
    assert torch.autograd.gradcheck(lambda z: fn(z, labels), (logits,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_all_masked_is_zero_with_zero_gradient(name, generator):
    fn, _ = CASES[name]
    logits, labels = _batch(generator)
    labels[:] = -100
    value = fn(logits, labels)
    (grad,) = torch.autograd.grad(value, logits)
    assert value.item() == 0.0
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("name", NAMES)
def test_all_masked_with_infinite_logits_is_still_zero(name, generator):
    fn, _ = CASES[name]
    logits = torch.full((2, 3, 4), float("inf"), requires_grad=True)
    value = fn(logits, torch.full((2, 3), -100))
    (grad,) = torch.autograd.grad(value, logits)
    assert value.item() == 0.0 and not grad.isnan().any()


@pytest.mark.parametrize("name", NAMES)
def test_ignored_tokens_do_not_influence_value_or_gradient(name, generator):
    fn, _ = CASES[name]
    logits, labels = _batch(generator)
    ignored = labels == -100
    assert ignored.any()
    value = fn(logits, labels)
    (grad,) = torch.autograd.grad(value, logits)
    changed = logits.detach().clone()
    changed[ignored] = torch.randn(int(ignored.sum()), logits.shape[-1], generator=generator, dtype=torch.float64) * 50
    assert fn(changed, labels).item() == pytest.approx(value.item(), rel=1e-12)
    assert torch.count_nonzero(grad[ignored]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_ignored_tokens_are_not_treated_as_token_zero(name, generator):
    # The original research code zeroed ignored labels, so they entered the losses as token id 0.
    fn, _ = CASES[name]
    logits, labels = _batch(generator)
    zeroed = labels.clamp_min(0)
    assert fn(logits, labels).item() != pytest.approx(fn(logits, zeroed).item(), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_good_prediction_beats_bad(name, generator):
    fn, _ = CASES[name]
    labels = torch.randint(0, 6, (2, 5), generator=generator)
    labels[0, :2] = -100
    onehot = torch.nn.functional.one_hot(labels.clamp_min(0), 6).double()
    good = 4.0 * onehot + 0.1 * torch.randn(2, 5, 6, generator=generator, dtype=torch.float64)
    bad = -4.0 * onehot + 0.1 * torch.randn(2, 5, 6, generator=generator, dtype=torch.float64)
    assert fn(good, labels) < fn(bad, labels)
    if name != "sadl":  # SADL with α = 1 peaks its reward at p_t = 0.5 (see test_sadl.py), so a uniform guess wins
        assert fn(good, labels) < fn(torch.zeros_like(good), labels) < fn(bad, labels)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_finite_and_computed_in_float32(name, dtype, generator):
    fn, _ = CASES[name]
    logits64, labels = _batch(generator, b=2, t=5, v=11, scale=20.0)
    logits = logits64.detach().to(dtype).requires_grad_()
    value = fn(logits, labels)
    (grad,) = torch.autograd.grad(value, logits)
    assert value.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    torch.testing.assert_close(value.double(), fn(logits.detach().double(), labels), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_float32_keeps_float32(name, generator):
    fn, _ = CASES[name]
    logits, labels = _batch(generator)
    value = fn(logits.detach().float(), labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), fn(logits.detach(), labels), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_accepts_flat_tokens(name, generator):
    fn, _ = CASES[name]
    logits, labels = _batch(generator, b=1)
    torch.testing.assert_close(fn(logits[0], labels[0]), fn(logits, labels))


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_clear_errors(name, generator):
    fn, _ = CASES[name]
    logits, labels = _batch(generator)
    with pytest.raises(ValueError, match=r"labels must have shape \[B, T\]"):
        fn(logits, labels[:, :-1])
    with pytest.raises(ValueError, match="integer"):
        fn(logits, labels.double())
    with pytest.raises(ValueError, match=r"labels must be an integer tensor \(token ids\), got torch.bool"):
        fn(logits, labels > 0)  # a mask is not a labels tensor of classes 0/1
    with pytest.raises(ValueError, match=r"logits must have shape \[B, T, V\] \(or \[N, V\] with 1-D labels"):
        fn(logits[0, 0], labels[0, :1])
    with pytest.raises(
        ValueError, match=r"logits must have shape \[B, T, V\].*got logits \(6, 7\) with labels \(1, 6\)"
    ):
        fn(logits[0], labels[:1])  # 2-D float logits are float: the message is about the shape
    with pytest.raises(ValueError, match="logits must be a float tensor"):
        fn(labels[..., None].expand(-1, -1, 3), labels)
    out_of_range = labels.clone()
    out_of_range[0, 0] = logits.shape[-1]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        fn(logits, out_of_range)


@pytest.mark.parametrize(
    ("fn", "options", "message"),
    [
        (focal_loss, {"gamma": -1.0}, "must be ≥ 0"),
        (self_adjusting_dice_loss, {"alpha": float("nan")}, "finite number"),
        (generalized_dice_loss, {"smooth": float("inf")}, "finite number"),
        (lovasz_softmax_loss, {"ignore_index": 0.5}, "ignore_index must be an int"),
    ],
)
def test_functional_forms_validate_options_too(fn, options, message, generator):
    logits, labels = _batch(generator)
    with pytest.raises(ValueError, match=message):
        fn(logits, labels, **options)
