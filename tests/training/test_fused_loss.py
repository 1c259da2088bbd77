"""Training with the head inside the loss (fused_loss) equals the materialised path on a tiny Llama with LoRA."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from training.helpers_train import fixed_batch, tiny_config
from training.test_trainer import GradCapture

from segloss.losses import CombinedLoss, FusedLinearCombinedLoss, causal_shift
from segloss.training import load_model_and_tokenizer, train
from segloss.training.fused_head import body_only, fused_head_problem, resolve_fused_loss
from segloss.training.lora import apply_lora


@pytest.fixture
def lora_model(tiny_model_dir):
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    for name, param in model.named_parameters():  # LoRA's B starts at 0: move it so every adapter weight matters
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    return model, tokenizer


def _lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_body_only_forward_and_fused_loss_equal_the_materialised_path(lora_model, tiny_model_dir, tmp_path):
    model, tokenizer = lora_model
    batch = fixed_batch(tiny_config(tiny_model_dir, tmp_path), tokenizer)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    labels, answer_labels = causal_shift(batch["labels"], batch["answer_labels"])
    combined = CombinedLoss({"ce": 0.6, "lovasz": 0.4})
    model.train()
    expected = combined(model(**inputs).logits, labels, answer_labels)
    expected.backward()
    expected_grads = _lora_grads(model)
    model.zero_grad()
    with body_only(model) as head:
        hidden = model(**inputs).logits
    assert model.get_output_embeddings() is head  # the head is back after the forward
    assert hidden.shape == (*labels.shape, head.in_features)
    value = FusedLinearCombinedLoss.from_combined(combined, chunk_size=16)(hidden, head.weight, labels, answer_labels)
    value.backward()
    grads = _lora_grads(model)
    assert expected_grads and set(grads) == set(expected_grads)
    assert all("lora_" in n for n in grads)  # LoRA on the body: the head stays frozen
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-4, atol=1e-6)


def test_a_training_step_with_fused_loss_has_the_materialised_gradients(tiny_model_dir, tmp_path, monkeypatch):
    hidden_widths: list[int] = []  # what the loss received in place of logits, step by step
    original = FusedLinearCombinedLoss.components

    def recording(self, hidden, *args, **kwargs):
        hidden_widths.append(hidden.shape[-1])
        return original(self, hidden, *args, **kwargs)

    monkeypatch.setattr(FusedLinearCombinedLoss, "components", recording)

    def first_grads(fused: bool, out: str) -> tuple[dict[str, torch.Tensor], dict]:
        capture = GradCapture()
        config = tiny_config(
            tiny_model_dir, tmp_path / out, loss="gdice", max_steps=1, lora_dropout=0.0, fused_loss=fused
        )
        result = train(config, callbacks=[capture])
        return capture.grads, json.loads((result.output_dir / "train_summary.json").read_text())

    fused_grads, fused_summary = first_grads(True, "fused")
    assert hidden_widths == [64]  # one micro-batch, hidden states (H = 64), not logits (V = 300)
    grads, summary = first_grads(False, "materialised")
    assert len(hidden_widths) == 1
    assert fused_summary["fused_loss"] is True and summary["fused_loss"] is False
    assert set(fused_grads) == set(grads) and grads
    assert any(g.abs().max() > 0 for g in grads.values())
    for name in grads:
        torch.testing.assert_close(fused_grads[name], grads[name], rtol=1e-4, atol=1e-7)
    assert fused_summary["train_loss"] == pytest.approx(summary["train_loss"], rel=1e-5)


def test_lora_on_the_head_cannot_fuse(tiny_model_dir):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir))
    model = apply_lora(model, r=2, targets=["q_proj", "lm_head"])
    assert "not a plain nn.Linear" in fused_head_problem(model)
    assert resolve_fused_loss(None, model, 10**9) is False  # automatic: off
    with pytest.raises(ValueError, match="fused_loss: cannot compute the output head inside the loss"):
        resolve_fused_loss(True, model, 10**9)
    assert resolve_fused_loss(False, model, 10**9) is False


def test_automatic_choice_follows_the_logits_size(lora_model, monkeypatch):
    model, _ = lora_model
    vocab = model.get_output_embeddings().out_features
    assert fused_head_problem(model) is None
    monkeypatch.setattr("segloss.losses.fused.CHUNK_ELEMENTS", 1000 * vocab)
    assert resolve_fused_loss(None, model, 1001) is True  # the logits would be larger than one chunk
    assert resolve_fused_loss(None, model, 1000) is False  # one chunk holds them all: nothing saved
    assert resolve_fused_loss(True, model, 1) is True


def test_models_that_transform_their_logits_cannot_fuse(lora_model):
    model, _ = lora_model
    model.get_base_model().config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping=30.0" in fused_head_problem(model)


def test_body_only_restores_the_head_after_an_error(lora_model):
    model, _ = lora_model
    head = model.get_output_embeddings()
    with pytest.raises(RuntimeError, match="boom"), body_only(model):
        assert isinstance(model.get_output_embeddings(), nn.Identity)
        raise RuntimeError("boom")
    assert model.get_output_embeddings() is head


def test_fused_loss_in_the_config(tiny_model_dir):
    from segloss.training.config import parse_train_config

    base = ["--model", str(tiny_model_dir)]
    assert parse_train_config(base).fused_loss is None  # automatic
    assert parse_train_config([*base, "--fused_loss", "false"]).fused_loss is False
    assert parse_train_config([*base, "--fused_loss"]).fused_loss is True
    with pytest.raises(ValueError, match="fused_loss"):
        parse_train_config([*base, "--fused_loss", "maybe"])
    with pytest.raises(ValueError, match=r"fused_loss: true, false or null \(automatic\), got 'yes'"):
        tiny_config(tiny_model_dir, "unused", fused_loss="yes")
