"""LossSpec: every user form parses to one validated spec, writes back to YAML, and builds the CombinedLoss."""

from __future__ import annotations

import pytest
import torch
import yaml

from segloss.losses import CombinedLoss, LossSpec, causal_shift, parse_loss_spec


@pytest.mark.parametrize(
    ("loss", "ce_weight", "weights", "label"),
    [
        ("lovasz", 0.6, {"ce": 0.6, "lovasz": 0.4}, "lovasz"),
        (" Focal ", 0.25, {"ce": 0.25, "focal": 0.75}, "focal"),
        ("self_adj_dice", None, {"ce": 0.6, "sadl": 0.4}, "sadl"),  # alias; default λ = 0.6
        ("ce", 0.3, {"ce": 1.0}, "ce"),  # CE alone ignores ce_weight
        (
            "ce=0.5,focal=0.25, lovasz=0.25",
            0.9,
            {"ce": 0.5, "focal": 0.25, "lovasz": 0.25},
            "ce=0.5,focal=0.25,lovasz=0.25",
        ),
        ({"ce": 0.3, "gdice": 0.7}, 0.9, {"ce": 0.3, "gdice": 0.7}, "ce=0.3,gdice=0.7"),
        ({"ce": 1}, None, {"ce": 1.0}, "ce"),
    ],
)
def test_every_user_form_parses(loss, ce_weight, weights, label) -> None:
    spec = LossSpec.parse(loss, ce_weight=ce_weight)
    assert dict(spec.weights) == pytest.approx(weights) and list(spec.weights) == list(weights)
    assert spec.label == label


@pytest.mark.parametrize(
    ("loss", "kwargs", "message"),
    [
        ("dice_of_doom", {}, "unknown loss"),
        ("ce=0.5,focal", {}, "write name=weight"),
        ("ce=-1,focal=2", {}, "≥ 0"),
        ("ce=0,focal=0", {}, "all loss weights are zero"),
        ({"ce": "a lot"}, {}, "finite number"),
        ("focal", {"ce_weight": 1.5}, r"ce_weight must be a number in \[0, 1\]"),
        ("focal", {"ce_weight": True}, "ce_weight"),
        ("", {}, "give a loss name"),
        (3, {}, "give a loss name"),
        ("focal", {"options": {"lovasz": {}}}, "loss_options: options given for 'lovasz'"),
        ("focal", {"options": {"focal": {"gama": 2}}}, "no option 'gama'"),
        ("focal", {"options": {"focal": 2}}, "loss_options.focal"),
    ],
)
def test_bad_specs_say_what_is_wrong(loss, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        LossSpec.parse(loss, **kwargs)


def test_options_are_validated_and_canonical() -> None:
    spec = LossSpec.parse("focal", options={"Focal": {"gamma": 1}})
    assert spec.options == {"focal": {"gamma": 1.0}}


@pytest.mark.parametrize("loss", ["lovasz", "ce", "ce=0.5,focal=0.25,lovasz=0.25", {"ce": 0.2, "sadl": 0.8}])
def test_to_config_round_trips_through_yaml(loss) -> None:
    spec = LossSpec.parse(loss, ce_weight=0.3, options={"ce": {}} if loss == "ce" else None)
    values = yaml.safe_load(yaml.safe_dump(spec.to_config()))
    again = LossSpec.parse(values["loss"], ce_weight=values.get("ce_weight"), options=values["loss_options"])
    assert again == spec and again.label == spec.label


def test_a_spec_passes_through_parse() -> None:
    spec = LossSpec.parse("focal")
    assert LossSpec.parse(spec) is spec
    assert LossSpec.parse(spec, options={"focal": {"gamma": 3}}).options == {"focal": {"gamma": 3.0}}


def test_build_is_the_combined_loss_of_the_weights() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    answer = labels.clone()
    answer[:, :3] = -100
    labels, answer = causal_shift(labels, answer)
    spec = LossSpec.parse("focal", ce_weight=0.25, options={"focal": {"gamma": 1.0}})
    expected = CombinedLoss({"ce": 0.25, "focal": 0.75}, {"focal": {"gamma": 1.0}})(logits, labels, answer)
    assert torch.allclose(spec.build()(logits, labels, answer), expected)
    assert spec.task_losses == ["focal"]


def test_parse_loss_spec_is_the_weights_of_the_spec() -> None:
    assert parse_loss_spec("lovasz") == {"ce": 0.6, "lovasz": pytest.approx(0.4)}
    assert parse_loss_spec({"self_adj_dice": 1}) == {"sadl": 1.0}


def test_group_and_classes_are_options_of_the_region_losses_only() -> None:
    spec = LossSpec.parse("lovasz", options={"lovasz": {"group": "sequence", "classes": "all"}})
    assert spec.options == {"lovasz": {"group": "sequence", "classes": "all"}}
    assert spec.tag == "lovasz[group=sequence,classes=all]" and spec.label == "lovasz"
    assert LossSpec.parse("lovasz", options={"lovasz": {"group": "batch"}}).options == {"lovasz": {}}  # the default
    assert LossSpec.parse("gdice", options={"gdice": {"classes": "all"}}).options == {"gdice": {}}
    combined = spec.build()
    assert combined.losses["lovasz"].config.group == "sequence"
    with pytest.raises(ValueError, match="loss 'lovasz': classes: 'some' is not one of present, all"):
        LossSpec.parse("lovasz", options={"lovasz": {"classes": "some"}})
    with pytest.raises(ValueError, match="loss 'focal' has no option 'group'"):
        LossSpec.parse("focal", options={"focal": {"group": "batch"}})
    values = yaml.safe_load(yaml.safe_dump(spec.to_config()))
    assert LossSpec.parse(values["loss"], ce_weight=values["ce_weight"], options=values["loss_options"]) == spec
