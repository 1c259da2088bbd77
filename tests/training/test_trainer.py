"""SeglossTrainer: exact gradient accumulation, per-term scales, logged components, loss goes down."""

from __future__ import annotations

import pytest
import torch
from training.helpers_train import batch_components, fixed_batch, tiny_config
from transformers import TrainerCallback

from segloss.training import load_model_and_tokenizer, train


class GradCapture(TrainerCallback):
    """Copies the gradients of the first optimizer step (after accumulation, before the update)."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.grads:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _first_step_grads(
    tiny_model_dir, out, loss: str, batch_size: int, accumulation: int, options: dict | None = None, **overrides
) -> dict[str, torch.Tensor]:
    capture = GradCapture()
    config = tiny_config(
        tiny_model_dir,
        out,
        loss=loss,
        loss_options={loss: options} if options else {},
        ce_weight=0.5,
        full_finetune=True,
        max_steps=1,
        train_limit=4,
        max_length=256,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_grad_norm=0.0,
        save_steps=10,
        **overrides,
    )
    train(config, callbacks=[capture])
    return capture.grads


@pytest.mark.parametrize(
    ("loss", "options"),
    [
        ("ce", None),
        ("focal", None),
        ("sadl", None),
        ("lovasz", None),  # group: batch, the statistics pass
        ("gdice", None),  # group: sequence, normalised by the step's sequences
        ("dice", {"group": "batch"}),
    ],
)
def test_gradient_accumulation_is_exact_through_the_trainer(tiny_model_dir, tmp_path, loss, options) -> None:
    # The Trainer's own loop (get_batch_samples, the statistics pass, compute_loss), with micro-batches of uneven
    # lengths; tests/losses/test_accumulate.py covers every loss and grouping without a Trainer.
    one_batch = _first_step_grads(tiny_model_dir, tmp_path / "a", loss, 4, 1, options)
    accumulated = _first_step_grads(tiny_model_dir, tmp_path / "b", loss, 1, 4, options)
    assert one_batch.keys() == accumulated.keys() and len(one_batch) > 10
    for name, grad in one_batch.items():
        assert torch.allclose(grad, accumulated[name], atol=1e-5, rtol=1e-4), name
    assert max(float(g.abs().max()) for g in one_batch.values()) > 1e-3  # the gradients are not all ~0


def test_ga_test_data_has_unequal_micro_batches(tiny_model_dir, tmp_path) -> None:
    # The exactness test above can fail: with these examples a plain mean of micro-batch means differs.
    config = tiny_config(tiny_model_dir, tmp_path, train_limit=4, max_length=256)
    _, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    batch = fixed_batch(config, tokenizer)
    answer_counts = batch["answer_labels"][:, 1:].ne(-100).sum(1)
    label_counts = batch["labels"][:, 1:].ne(-100).sum(1)
    assert len(set(answer_counts.tolist())) > 1 and len(set(label_counts.tolist())) > 1


class LogCapture(TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


@pytest.mark.parametrize("loss", ["ce", "focal", "gdice", "sadl", "lovasz"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_model_dir, tmp_path, loss) -> None:
    logs = LogCapture()
    config = tiny_config(tiny_model_dir, tmp_path, loss=loss, max_steps=8, train_limit=4, logging_steps=4)
    weights = config.loss_weights()
    base, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    batch = fixed_batch(config, tokenizer)
    before = batch_components(base, batch, weights)
    result = train(config, callbacks=[logs])
    after = batch_components(result.model, batch, weights)
    assert after["total"] < before["total"] - 0.05, (before, after)
    if loss != "ce":
        assert after[loss] < before[loss], (before, after)
    step_logs = [entry for entry in logs.logs if "loss" in entry]
    assert len(step_logs) == 2  # steps 4 and 8
    for entry in step_logs:  # components are logged, and the logged loss is their sum
        assert entry["total"] == pytest.approx(entry["ce"] + entry["task"], rel=1e-5)
        assert entry["loss"] == pytest.approx(entry["total"], rel=1e-4)
        assert (entry["task"] > 0) == (loss != "ce")
    assert result.summary["final_losses"]["total"] == pytest.approx(step_logs[-1]["total"])


def test_a_combination_that_is_not_exact_is_named() -> None:
    from segloss.losses import CombinedLoss
    from segloss.training import exactness_problems

    per_sequence = CombinedLoss({"ce": 0.6, "dice": 0.2, "lovasz": 0.2}, {"lovasz": {"group": "sequence"}})
    assert exactness_problems(per_sequence) == []  # padded batches: every loss and grouping is exact
    (problem,) = exactness_problems(per_sequence, padding_free=True)
    assert problem.startswith("dice, lovasz with group: sequence on padding-free batches")
    assert exactness_problems(CombinedLoss({"ce": 0.6, "lovasz": 0.4}), padding_free=True) == []  # batch: exact
