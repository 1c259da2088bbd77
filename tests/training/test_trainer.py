"""SeglossTrainer: exact gradient accumulation, per-term scales, logged components, loss goes down."""

from __future__ import annotations

import pytest
import torch
from training.helpers_train import batch_components, fixed_batch, tiny_config
from transformers import TrainerCallback

from segloss.training import load_model_and_tokenizer, term_scales, train


def test_term_scales_hand_computed() -> None:
    # micro-batch with 3 of 10 CE targets, 1 of 4 answer targets, 2 micro-batches per step, 1 process
    scales = term_scales(
        ["ce", "focal", "sadl", "lovasz", "gdice"],
        n_labels=3,
        n_answer=1,
        total_labels=10,
        total_answer=4,
        micro_batches=2,
    )
    assert scales == pytest.approx({"ce": 0.3, "focal": 0.25, "sadl": 0.25, "lovasz": 0.5, "gdice": 0.5})
    # 2 processes: DDP averages gradients, so each local weight is doubled
    two = term_scales(
        ["ce", "lovasz"], n_labels=3, n_answer=1, total_labels=10, total_answer=4, micro_batches=4, world_size=2
    )
    assert two == pytest.approx({"ce": 0.6, "lovasz": 0.5})
    assert term_scales(["focal"], n_labels=0, n_answer=0, total_labels=0, total_answer=0, micro_batches=1) == {
        "focal": 0.0
    }


class GradCapture(TrainerCallback):
    """Copies the gradients of the first optimizer step (after accumulation, before the update)."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.grads:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _first_step_grads(tiny_model_dir, out, loss: str, batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
    capture = GradCapture()
    config = tiny_config(
        tiny_model_dir,
        out,
        loss=loss,
        ce_weight=0.5,
        full_finetune=True,
        max_steps=1,
        train_limit=4,
        max_length=256,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_grad_norm=0.0,
        save_steps=10,
    )
    train(config, callbacks=[capture])
    return capture.grads


@pytest.mark.parametrize("loss", ["ce", "focal", "sadl"])
def test_gradient_accumulation_is_exact_for_token_mean_losses(tiny_model_dir, tmp_path, loss) -> None:
    one_batch = _first_step_grads(tiny_model_dir, tmp_path / "a", loss, batch_size=4, accumulation=1)
    accumulated = _first_step_grads(tiny_model_dir, tmp_path / "b", loss, batch_size=1, accumulation=4)
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
