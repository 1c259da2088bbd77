"""The typed loss classes, `reduction`, and the bugs found by comparing with the peer libraries."""

from __future__ import annotations

import logging

import pytest
import torch

from segloss.losses import (
    LOSS_CLASSES,
    LOSSES,
    CombinedLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    LovaszSoftmaxLoss,
    SelfAdjustingDiceLoss,
    TverskyLoss,
    focal_loss,
    generalized_dice_loss,
    get_loss,
    tversky_loss,
)


@pytest.fixture
def batch(generator):
    logits = torch.randn(2, 5, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 8, (2, 5), generator=generator)
    labels[0, :2] = -100
    return logits, labels


def test_get_loss_returns_the_typed_class_with_the_same_value(batch):
    logits, labels = batch
    assert set(LOSS_CLASSES) == set(LOSSES)
    for name, cls in LOSS_CLASSES.items():
        module = get_loss(name)
        assert type(module) is cls and module.name == name
        assert module(logits, labels).item() == pytest.approx(LOSSES[name](logits, labels).item(), rel=1e-12)


@pytest.mark.parametrize(
    ("module", "fn", "options"),
    [
        (FocalLoss(gamma=1.5), focal_loss, {"gamma": 1.5}),
        (GeneralizedDiceLoss(smooth=0.1, w_type="simple"), generalized_dice_loss, {"smooth": 0.1, "w_type": "simple"}),
        (TverskyLoss(alpha=0.3, beta=0.7), tversky_loss, {"alpha": 0.3, "beta": 0.7}),
    ],
)
def test_typed_options_reach_the_function(module, fn, options, batch):
    logits, labels = batch
    assert module(logits, labels).item() == pytest.approx(fn(logits, labels, **options).item(), rel=1e-12)
    assert module(logits, labels).item() != pytest.approx(fn(logits, labels).item(), rel=1e-6)
    assert get_loss(module.name, **options).options == module.options


def test_typed_defaults_are_the_functions_defaults(batch):
    # `options` keeps only what differs from the defaults, and the defaults are the functional forms' defaults.
    logits, labels = batch
    for cls in (FocalLoss, SelfAdjustingDiceLoss, GeneralizedDiceLoss, LovaszSoftmaxLoss, TverskyLoss):
        module = cls()
        assert module.options == {} and module.ignore_index == -100
        assert module(logits, labels).item() == pytest.approx(LOSSES[module.name](logits, labels).item(), rel=1e-15)
    assert FocalLoss(gamma=1.0).options == {"gamma": 1.0} and FocalLoss(gamma=2.0).options == {}
    assert FocalTverskyLoss(gamma=0.5).options == {"gamma": 0.5}
    assert FocalLoss(reduction="sum").options == {"reduction": "sum"}
    assert "gamma=1.0" in repr(FocalLoss(gamma=1.0))


@pytest.mark.parametrize("name", ["ce", "focal", "sadl"])
def test_sum_reduction_is_the_mean_times_the_token_count(name, batch):
    logits, labels = batch
    n_valid = int((labels != -100).sum())
    total = get_loss(name, reduction="sum")(logits, labels)
    assert total.item() == pytest.approx(n_valid * get_loss(name)(logits, labels).item(), rel=1e-12)
    all_masked = get_loss(name, reduction="sum")(logits, torch.full_like(labels, -100))
    (grad,) = torch.autograd.grad(all_masked, logits)
    assert all_masked.item() == 0.0 and torch.count_nonzero(grad) == 0


def test_sum_over_micro_batches_normalised_by_the_callers_count(batch):
    # The reason for "sum": a caller adds micro-batches and divides once by its own token count.
    logits, labels = batch
    parts = [get_loss("focal", reduction="sum")(logits[i : i + 1], labels[i : i + 1]) for i in range(2)]
    whole = focal_loss(logits, labels)
    assert (sum(parts) / (labels != -100).sum()).item() == pytest.approx(whole.item(), rel=1e-12)


@pytest.mark.parametrize("cls", [GeneralizedDiceLoss, LovaszSoftmaxLoss, DiceLoss, JaccardLoss, TverskyLoss])
def test_region_losses_have_no_sum_reduction(cls):
    with pytest.raises(ValueError, match="reduction: 'sum' is not one of mean \\(it is not a sum over tokens"):
        cls(reduction="sum")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FocalLoss(reduction="none"), "reduction: 'none' is not one of mean, sum"),
        (lambda: GeneralizedDiceLoss(w_type="log"), "w_type: 'log' is not one of square, simple, uniform"),
        (lambda: TverskyLoss(beta=-0.1), "option beta must be ≥ 0"),
        (
            lambda: get_loss("dice", alpha=0.5),
            "loss 'dice' has no option 'alpha'; valid options: smooth, group, classes, reduction, ignore_index",
        ),
        (lambda: FocalLoss(ignore_index=1.5), "ignore_index must be an int"),
    ],
)
def test_bad_typed_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_gdice_weight_types_follow_their_formulas():
    # One sequence, classes 0 (×2) and 1 (×1), uniform p over V = 2: I = (1, 0.5), P = (1.5, 1.5), no absent mass.
    logits = torch.zeros(1, 3, 2, dtype=torch.float64)
    labels = torch.tensor([[0, 0, 1]])
    for w_type, w in {"square": (1 / 4, 1.0), "simple": (1 / 2, 1.0), "uniform": (1.0, 1.0)}.items():
        expected = 1 - 2 * (w[0] * 1.0 + w[1] * 0.5) / (w[0] * (2 + 1.5) + w[1] * (1 + 1.5))
        value = generalized_dice_loss(logits, labels, smooth=0.0, w_type=w_type)
        assert value.item() == pytest.approx(expected, rel=1e-12), w_type


def test_tversky_special_cases_are_dice_and_jaccard(batch):
    logits, labels = batch
    dice, jaccard = DiceLoss(smooth=0.0)(logits, labels), JaccardLoss(smooth=0.0)(logits, labels)
    assert TverskyLoss(0.5, 0.5, smooth=0.0)(logits, labels).item() == pytest.approx(dice.item(), rel=1e-12)
    assert TverskyLoss(1.0, 1.0, smooth=0.0)(logits, labels).item() == pytest.approx(jaccard.item(), rel=1e-12)
    assert FocalTverskyLoss(gamma=1.0)(logits, labels).item() == pytest.approx(TverskyLoss()(logits, labels).item())


def test_tversky_beta_penalises_false_negatives():
    # One token of class 0 predicted with p = 0.5 (mass on class 1, absent): a pure false negative.
    logits = torch.zeros(1, 1, 2, dtype=torch.float64)
    labels = torch.tensor([[0]])
    fn_heavy = tversky_loss(logits, labels, alpha=0.1, beta=0.9, smooth=0.0)
    fp_heavy = tversky_loss(logits, labels, alpha=0.9, beta=0.1, smooth=0.0)
    assert fn_heavy.item() == pytest.approx(1 - 0.5 / (0.5 + 0.9 * 0.5), rel=1e-12)
    assert fn_heavy > fp_heavy


def test_backward_through_a_transposed_view_of_the_logits(generator):
    # [1, V, T] logits (a channels-first layout, as vision libraries use) seen as [1, T, V]: not contiguous.
    channels_first = torch.randn(1, 11, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    logits = channels_first.transpose(1, 2)
    labels = torch.tensor([[3, -100, 0, 10, 3, 5]])
    value = CombinedLoss({"ce": 0.5, "lovasz": 0.5})(logits, labels, labels)
    (grad,) = torch.autograd.grad(value, channels_first)
    dense = logits.detach().contiguous().requires_grad_()
    expected = CombinedLoss({"ce": 0.5, "lovasz": 0.5})(dense, labels, labels)
    (expected_grad,) = torch.autograd.grad(expected, dense)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad.transpose(1, 2), expected_grad, rtol=1e-12, atol=0)


def test_combined_names_answer_labels_in_its_errors(batch):
    logits, labels = batch
    combined = CombinedLoss({"ce": 0.6, "focal": 0.4})
    with pytest.raises(ValueError, match=r"answer_labels must have shape \[B, T\] = \(2, 5\), got \(2, 4\)"):
        combined(logits, labels, labels[:, :4])
    out_of_range = labels.clone()
    out_of_range[1, 0] = 8
    with pytest.raises(ValueError, match="answer_labels value 8 is outside the vocabulary"):
        combined(logits, labels, out_of_range)
    with pytest.raises(ValueError, match="answer_labels must be an integer tensor"):
        combined(logits, labels, labels > 3)
    with pytest.raises(ValueError, match=r"^labels must have shape"):
        combined(logits, labels[:, :4], labels)


def test_effective_weights_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="segloss.losses.modules"):
        CombinedLoss({"ce": 0.6, "lovasz": 0.4})
        CombinedLoss({"ce": 1.0, "focal": 0.5})
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "combined loss: effective weights ce=0.6, lovasz=0.4"
    assert (
        messages[1] == "combined loss: effective weights ce=1, focal=0.5 (they sum to 1.5, not 1: the loss is scaled)"
    )
