"""Every loss and the fused head run under torch.compile(fullgraph=True) — no graph break — and equal eager.

Compiling is slow on a CPU, so few graphs are built: one objective holding all nine losses with their defaults and
the fused head (one and two passes) traced forward and backward with the ``aot_eager`` backend (dynamo +
AOTAutograd: with ``fullgraph=True`` any graph break is an error); the nine with the other grouping and the public
functions and modules traced by dynamo (``eager`` backend); and one objective through Inductor, which generates the
kernels. Values and gradients must match eager to 1e-5 relative (float32).
"""

from __future__ import annotations

import pytest
import torch

from segloss.losses import LOSS_CLASSES, LOSS_TABLE, LOSSES, CombinedLoss, FusedLinearCombinedLoss

REGION = [name for name in LOSSES if LOSS_TABLE[name].kind == "region"]
# The defaults (Lovász per batch, the others per sequence), then every region loss with the other grouping and,
# for some, every class counted.
OTHER_GROUPING = {
    name: {"group": "sequence" if LOSS_TABLE[name].options().group == "batch" else "batch"} for name in REGION
}
OTHER_GROUPING["dice"]["classes"] = "all"
OTHER_GROUPING["lovasz"]["classes"] = "all"
OTHER_GROUPING["gdice"]["classes"] = "present"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _batch(seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 7, 11, generator=gen).requires_grad_()
    labels = torch.randint(0, 11, (3, 7), generator=gen)
    labels[0, :2] = -100
    labels[2] = -100  # a sequence without targets
    answer = labels.clone()
    answer[:, :3] = -100
    return logits, labels, answer


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def _assert_terms_equal(compiled: dict[str, torch.Tensor], eager: dict[str, torch.Tensor], inputs) -> None:
    assert compiled.keys() == eager.keys()
    for name in eager:
        assert _relative(compiled[name].detach(), eager[name].detach()) <= 1e-5, name
    for got, want in zip(
        torch.autograd.grad(compiled["total"], inputs), torch.autograd.grad(eager["total"], inputs), strict=True
    ):
        assert float(want.abs().max()) > 0 and _relative(got, want) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "backend"),
    [(None, "aot_eager"), (OTHER_GROUPING, "eager")],  # the backward graph is traced once, for the defaults
    ids=["defaults", "other-grouping"],
)
def test_all_nine_losses_compile_without_graph_break(options, backend) -> None:
    combined = CombinedLoss(dict.fromkeys(LOSSES, 0.1), options)
    compiled = torch.compile(combined.components, fullgraph=True, backend=backend)
    logits, labels, answer = _batch()
    _assert_terms_equal(compiled(logits, labels, answer), combined.components(logits, labels, answer), (logits,))


@pytest.mark.slow
def test_public_functions_and_modules_compile_without_graph_break() -> None:
    # They run the cores of the objective above through their own entry point (one loss per call).
    focal = LOSS_CLASSES["focal"](gamma=1.0)

    def every_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.stack([LOSSES["lovasz"](logits, labels), LOSSES["gdice"](logits, labels), focal(logits, labels)])

    logits, _, answer = _batch()
    compiled = torch.compile(every_loss, fullgraph=True, backend="eager")(logits, answer)
    eager = every_loss(logits, answer)
    assert _relative(compiled.detach(), eager.detach()) <= 1e-5
    weights = torch.linspace(1, 2, eager.numel())
    (got,), (want,) = (torch.autograd.grad((v * weights).sum(), logits) for v in (compiled, eager))
    assert _relative(got, want) <= 1e-5


@pytest.mark.slow
def test_the_fused_head_compiles_without_graph_break() -> None:
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(3, 7, 5, generator=gen).requires_grad_()
    weight = (torch.randn(11, 5, generator=gen) / 5**0.5).requires_grad_()
    _, labels, answer = _batch()
    one_pass = FusedLinearCombinedLoss({"ce": 0.5, "focal": 0.3, "sadl": 0.2}, chunk_size=4)
    two_pass = FusedLinearCombinedLoss({"ce": 0.6, "lovasz": 0.2, "gdice": 0.2}, chunk_size=4)
    assert one_pass.one_pass and not two_pass.one_pass

    def both(hidden: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        first = one_pass.components(hidden, weight, labels, answer)
        second = two_pass.components(hidden, weight, labels, answer)
        return (
            {f"one_{k}": v for k, v in first.items()}
            | {f"two_{k}": v for k, v in second.items()}
            | {"total": first["total"] + second["total"]}
        )

    compiled = torch.compile(both, fullgraph=True, backend="aot_eager")
    _assert_terms_equal(compiled(hidden, weight), both(hidden, weight), (hidden, weight))


@pytest.mark.slow
def test_inductor_kernels_equal_eager() -> None:
    # The real compiler: Inductor generates the kernels of everything outside the custom operators.
    combined = CombinedLoss({"ce": 0.6, "lovasz": 0.4})
    compiled = torch.compile(combined.components, fullgraph=True)
    logits, labels, answer = _batch()
    _assert_terms_equal(compiled(logits, labels, answer), combined.components(logits, labels, answer), (logits,))
