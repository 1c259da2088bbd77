import math

import pytest
import torch

from segloss.losses import (
    LOSSES,
    CombinedLoss,
    causal_shift,
    cross_entropy,
    focal_loss,
    get_loss,
    lovasz_softmax_loss,
    parse_loss_spec,
)


@pytest.fixture
def batch(generator):
    logits = torch.randn(2, 6, 9, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 9, (2, 6), generator=generator)
    labels[1, 5] = -100  # padding
    answer_labels = labels.clone()
    answer_labels[:, :3] = -100  # the prompt
    return logits, labels, answer_labels


def test_registry_names_and_aliases(batch):
    logits, labels, _ = batch
    assert set(LOSSES) == {"ce", "focal", "gdice", "sadl", "lovasz", "dice", "jaccard", "tversky", "focal_tversky"}
    assert get_loss("cross_entropy").name == "ce" and get_loss("self_adj_dice").name == "sadl"
    assert get_loss("focal", gamma=0.0)(logits, labels).item() == pytest.approx(cross_entropy(logits, labels).item())


def test_unknown_name_lists_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown loss 'iou'.*ce, dice, focal, focal_tversky, gdice, jaccard, lovasz"
    ):
        get_loss("iou")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("focal", {"gamma": -1.0}, "must be ≥ 0"),
        ("focal", {"gamma": float("nan")}, "finite number"),
        ("sadl", {"alpha": float("inf")}, "finite number"),
        ("gdice", {"smooth": "a"}, "finite number"),
        ("lovasz", {"gamma": 2.0}, "has no option 'gamma'; valid options: group, classes, reduction, ignore_index"),
        ("ce", {"ignore_index": 1.5}, "ignore_index must be an int"),
    ],
)
def test_bad_options(name, options, message):
    with pytest.raises(ValueError, match=message):
        get_loss(name, **options)


def test_combined_is_weighted_sum_with_ce_on_labels_and_task_on_answer(batch):
    logits, labels, answer_labels = batch
    combined = CombinedLoss({"ce": 0.6, "lovasz": 0.4})
    expected = 0.6 * cross_entropy(logits, labels) + 0.4 * lovasz_softmax_loss(logits, answer_labels)
    terms = combined.components(logits, labels, answer_labels)
    assert set(terms) == {"ce", "lovasz", "total"}
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert combined(logits, labels, answer_labels).item() == pytest.approx(expected.item(), rel=1e-12)


def test_prompt_tokens_never_reach_the_task_loss(batch):
    logits, labels, answer_labels = batch
    (grad,) = torch.autograd.grad(CombinedLoss({"focal": 1.0})(logits, labels, answer_labels), logits)
    assert torch.count_nonzero(grad[answer_labels == -100]) == 0
    assert torch.count_nonzero(grad[answer_labels != -100]) > 0


def test_all_ignored_answer_gives_only_ce(batch):
    logits, labels, answer_labels = batch
    answer_labels[:] = -100
    value = CombinedLoss({"ce": 0.6, "gdice": 0.4})(logits, labels, answer_labels)
    assert value.item() == pytest.approx(0.6 * cross_entropy(logits, labels).item(), rel=1e-12)


def test_options_and_zero_weights(batch):
    logits, labels, answer_labels = batch
    combined = CombinedLoss({"ce": 0.0, "focal": 1.0}, options={"focal": {"gamma": 1.0}})
    assert list(combined.losses) == ["focal"]  # zero-weight losses are not computed
    expected = focal_loss(logits, answer_labels, gamma=1.0)
    assert combined(logits, labels, answer_labels).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "empty"),
        ({"ce": 0.0, "focal": 0.0}, "all loss weights are zero"),
        ({"ce": -0.1, "focal": 1.0}, "must be ≥ 0"),
        ({"ce": math.inf}, "finite number"),
        ({"ce": 1.0, "cross_entropy": 1.0}, "appears twice"),
        ({"iou": 1.0}, "unknown loss"),
    ],
)
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        CombinedLoss(weights)


def test_options_for_unweighted_loss_are_rejected():
    with pytest.raises(ValueError, match="without a weight"):
        CombinedLoss({"ce": 1.0}, options={"focal": {"gamma": 1.0}})


def test_parse_loss_spec():
    assert parse_loss_spec("lovasz") == {"ce": 0.6, "lovasz": pytest.approx(0.4)}
    assert parse_loss_spec("focal", ce_weight=0.25) == {"ce": 0.25, "focal": 0.75}
    assert parse_loss_spec("ce") == {"ce": 1.0}
    assert parse_loss_spec("ce=0.5,focal=0.25, lovasz=0.25") == {"ce": 0.5, "focal": 0.25, "lovasz": 0.25}
    assert parse_loss_spec({"self_adj_dice": 1}) == {"sadl": 1.0}
    with pytest.raises(ValueError, match="write name=weight"):
        parse_loss_spec("ce=0.5,focal")
    with pytest.raises(ValueError, match=r"ce_weight must be a number in \[0, 1\]"):
        parse_loss_spec("focal", ce_weight=1.5)
    with pytest.raises(ValueError, match="unknown loss"):
        parse_loss_spec("nope")


def test_causal_shift_aligns_labels_with_next_token_logits():
    labels = torch.tensor([[1, 2, 3, -100]])
    answer = torch.tensor([[-100, -100, 3, 4]])
    shifted, shifted_answer = causal_shift(labels, answer)
    assert shifted.tolist() == [[2, 3, -100, -100]]
    assert shifted_answer.tolist() == [[-100, 3, 4, -100]]
    assert causal_shift(labels, ignore_index=-1)[0].tolist() == [[2, 3, -100, -1]]


def test_shared_gather_gives_exactly_the_single_losses(batch):
    # CombinedLoss reads each row's log-softmax once; every term must still equal its single loss, gradient too.
    logits, labels, answer_labels = batch
    answer_labels[0, 0] = 4  # an answer token where `labels` is also valid, and one where it is not:
    labels[1, 4], answer_labels[1, 4] = -100, 2
    weights = {"ce": 0.3, "focal": 0.2, "sadl": 0.1, "gdice": 0.15, "lovasz": 0.25}
    combined = CombinedLoss(weights)(logits, labels, answer_labels)
    singles = sum(w * get_loss(n)(logits, labels if n == "ce" else answer_labels) for n, w in weights.items())
    torch.testing.assert_close(combined, singles, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.autograd.grad(combined, logits)[0], torch.autograd.grad(singles, logits)[0])


def test_ignore_index_belongs_to_the_combined_loss(batch):
    logits, labels, answer_labels = batch
    with pytest.raises(ValueError, match="set ignore_index on CombinedLoss"):
        CombinedLoss({"focal": 1.0}, options={"focal": {"ignore_index": -1}})
    shifted = [torch.where(t == -100, -1, t) for t in (labels, answer_labels)]
    value = CombinedLoss({"ce": 0.5, "lovasz": 0.5}, ignore_index=-1)(logits, *shifted)
    expected = CombinedLoss({"ce": 0.5, "lovasz": 0.5})(logits, labels, answer_labels)
    assert value.item() == pytest.approx(expected.item())
