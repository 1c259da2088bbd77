"""The loss table: one entry plus a core is a loss everywhere — registry, function, module, options, LossSpec,
combined and fused objectives, exact accumulation. Proved with two losses added here and removed after."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from helpers.accumulation import TinyLM, collate, sequences, step_gradients

from segloss.losses import (
    LOSS_CLASSES,
    LOSS_TABLE,
    LOSSES,
    CombinedLoss,
    LossDef,
    LossSpec,
    RegionOptions,
    TokenOptions,
    cross_entropy,
    fused_linear_loss,
    get_loss,
    option,
    register_loss,
    unregister_loss,
)
from segloss.losses.core import RegionStats, region_stats


@dataclasses.dataclass(frozen=True)
class BrierOptions(TokenOptions):
    scale: float = option(1.0, "multiplies the loss", minimum=0)


def brier(log_p: torch.Tensor, options: BrierOptions) -> torch.Tensor:
    return options.scale * (1 - log_p.exp()) ** 2


def brier_derivative(log_p: torch.Tensor, options: BrierOptions) -> torch.Tensor:
    p = log_p.exp()
    return -2 * options.scale * (1 - p) * p


@dataclasses.dataclass(frozen=True)
class RecallOptions(RegionOptions):
    smooth: float = option(0.0, "added to numerator and denominator", minimum=0)


def recall_score(stats: RegionStats, options: RecallOptions) -> torch.Tensor:
    """1 − mean over present classes of the soft recall I_c / n_c, per group."""
    present = stats.counts > 0
    recall = (stats.intersection + options.smooth) / (stats.counts + options.smooth).clamp_min(1e-12)
    weight = present.to(recall.dtype)
    return 1 - (recall * weight).sum(1) / weight.sum(1).clamp_min(1)


@pytest.fixture
def added():
    register_loss(LossDef("brier", BrierOptions, "token", per_token=brier, derivative=brier_derivative))
    register_loss(LossDef("recall", RecallOptions, "region", statistics=region_stats, score=recall_score))
    yield
    unregister_loss("brier")
    unregister_loss("recall")
    assert "brier" not in LOSSES and "recall" not in LOSS_CLASSES


def _batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(2, 6, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 7, (2, 6), generator=generator)
    labels[0, :3] = -100
    return logits, labels


def test_an_added_token_loss_is_a_function_a_module_and_a_checked_option(added, generator) -> None:
    logits, labels = _batch(generator)
    p_target = torch.softmax(logits, -1).gather(2, labels.clamp_min(0)[..., None])[..., 0][labels != -100]
    expected = 2.0 * ((1 - p_target) ** 2).mean()
    assert LOSSES["brier"](logits, labels, scale=2.0).item() == pytest.approx(expected.item(), rel=1e-12)
    module = get_loss("brier", scale=2.0)
    assert type(module).__name__ == "BrierLoss" and type(module) is LOSS_CLASSES["brier"]
    assert module.options == {"scale": 2.0} and module(logits, labels).item() == pytest.approx(expected.item())
    assert LOSS_CLASSES["brier"](2.0).options == {"scale": 2.0}  # positional, like FocalLoss(2.0)
    assert "scale=1.0" in str(inspect.signature(LOSSES["brier"]))
    with pytest.raises(ValueError, match="loss 'brier': option scale must be ≥ 0, got -1"):
        get_loss("brier", scale=-1)
    with pytest.raises(ValueError, match="loss 'brier' has no option 'group'; valid options: scale, reduction"):
        get_loss("brier", group="batch")
    spec = LossSpec.parse("brier", ce_weight=0.5, options={"brier": {"scale": 2}})
    both = spec.build()(logits, labels, labels)
    assert both.item() == pytest.approx(0.5 * cross_entropy(logits, labels).item() + 0.5 * expected.item())


def test_an_added_loss_joins_the_fused_head_and_exact_accumulation(added, generator) -> None:
    hidden = torch.randn(2, 6, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    _, labels = _batch(generator)
    for weights in ({"ce": 0.5, "brier": 0.5}, {"ce": 0.5, "recall": 0.5}):  # one pass; two passes
        value = fused_linear_loss(hidden, weight, labels, labels, weights=weights, chunk_size=4)
        expected = CombinedLoss(weights)(hidden @ weight.t(), labels, labels)
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
        for got, want in zip(
            torch.autograd.grad(value, (hidden, weight)), torch.autograd.grad(expected, (hidden, weight)), strict=True
        ):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
    rows = sequences()
    for options in ({"group": "sequence"}, {"group": "batch"}):
        combined = CombinedLoss({"recall": 1.0}, {"recall": options})
        whole = step_gradients(TinyLM(), [collate(rows)], combined)
        split = step_gradients(TinyLM(), [collate(rows[:2]), collate(rows[2:])], combined)
        for name, grad in whole.items():
            torch.testing.assert_close(split[name], grad, rtol=1e-9, atol=1e-14)


def test_the_table_is_the_one_source(generator) -> None:
    assert set(LOSSES) == set(LOSS_CLASSES) == set(LOSS_TABLE)
    for name, definition in LOSS_TABLE.items():
        defaults = definition.options()
        signature = inspect.signature(LOSSES[name]).parameters
        for field in dataclasses.fields(defaults):
            assert signature[field.name].default == field.default  # the function's defaults are the table's
            assert inspect.signature(LOSS_CLASSES[name]).parameters[field.name].default == field.default
        assert (definition.kind == "region") == hasattr(defaults, "group")
    with pytest.raises(ValueError, match="already registered"):
        register_loss(LOSS_TABLE["focal"])


def test_the_docs_table_is_the_loss_table() -> None:
    # docs/losses.md "Properties": every loss, its kind and defaults as the table has them, and only claims the
    # tests make (test_accumulate.py's cases hold each region loss with both groupings; test_compile.py all nine).
    from pathlib import Path

    from helpers.accumulation import CASES

    text = (Path(__file__).parents[2] / "docs" / "losses.md").read_text()
    section = text[text.index("## Properties") : text.index("## Grouping and classes")]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    assert [r[0].strip(" `") for r in rows] == list(LOSS_TABLE)
    for name, kind, default, *claims in (map(str.strip, r) for r in rows):
        definition, options = LOSS_TABLE[name.strip("`")], LOSS_TABLE[name.strip("`")].options()
        if definition.kind == "token":
            assert (kind, default, claims) == ("token-local", "—", ["yes"] * 3)
            assert (definition.name, {}) in CASES
        else:
            assert kind == "per-sequence / batch"
            assert default == f"group: {options.group}, classes: {options.classes}"
            assert claims == ["yes, both groupings"] * 3
            assert {(definition.name, g) for g in ("sequence", "batch")} <= {(n, o.get("group")) for n, o in CASES}
