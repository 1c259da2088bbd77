"""LoRA target discovery per architecture and the error for targets that match nothing."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig

from segloss.training import apply_lora, find_lora_targets, linear_layer_names


@pytest.fixture(scope="module")
def tiny_llama(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def _tiny(config_cls, **kw):
    return AutoModelForCausalLM.from_config(config_cls(vocab_size=64, **kw))


def test_llama_targets_are_the_attention_projections(tiny_llama) -> None:
    assert find_lora_targets(tiny_llama) == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_gpt2_and_neox_targets_match_real_layers() -> None:
    gpt2 = _tiny(GPT2Config, n_embd=16, n_layer=1, n_head=2)
    assert find_lora_targets(gpt2) == ["c_attn", "attn.c_proj"]
    peft_model = apply_lora(gpt2)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_A" in n}
    assert any(n.endswith("attn.c_attn") for n in adapted) and not any("mlp" in n for n in adapted)
    neox = _tiny(GPTNeoXConfig, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    apply_lora(neox)  # the table's names exist in the model, else check_lora_targets would raise


def test_unknown_architecture_falls_back_to_all_linear_layers_but_the_head(tiny_llama, monkeypatch) -> None:
    monkeypatch.setattr(tiny_llama.config, "model_type", "brand_new_arch")
    targets = find_lora_targets(tiny_llama)
    assert targets == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert "lm_head" not in targets


def test_only_adapter_weights_are_trainable(tiny_model_dir) -> None:
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), r=4, alpha=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # 2 layers × 4 projections × (A and B)
    assert len(trainable) == 16


def test_targets_matching_nothing_list_the_linear_layers(tiny_model_dir) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert "model.layers.0.self_attn.q_proj" in linear_layer_names(model)
    with pytest.raises(ValueError, match=r"lora_target_modules: \['query_key_value'\].*q_proj"):
        apply_lora(model, targets=["q_proj", "query_key_value"])
