"""LoRA targets: discovery per architecture, the `lora_targets` choices (attention, authors, all-linear, names), LoRA
on a tied ``lm_head``, and the error for targets that match nothing."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig

from segloss.training import apply_lora, find_lora_targets, linear_layer_names
from segloss.training.config import parse_train_config
from segloss.training.lora import AUTHORS_LORA_TARGETS, parse_lora_targets, resolve_lora_targets


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
    with pytest.raises(ValueError, match=r"lora_targets \(lora_target_modules\): \['query_key_value'\].*q_proj"):
        apply_lora(model, targets=["q_proj", "query_key_value"])


def _adapted(model) -> set[str]:
    """Suffixes of the modules that carry a LoRA adapter."""
    return {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A" in n}


def test_lora_targets_choices_on_llama(tiny_model_dir) -> None:
    attention = {"q_proj", "k_proj", "v_proj", "o_proj"}
    mlp = {"gate_proj", "up_proj", "down_proj"}
    for value, expected in (
        ("attention", attention),
        ("authors", attention | mlp | {"lm_head"}),  # the paper code's Llama/StableLM list
        ("all-linear", attention | mlp),
        (["q_proj", "v_proj"], {"q_proj", "v_proj"}),
    ):
        model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), r=2, alpha=4, targets=value)
        assert _adapted(model) == expected, value


def test_authors_targets_per_family_and_no_guess_for_others() -> None:
    neox = _tiny(GPTNeoXConfig, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert resolve_lora_targets(neox, "authors") == ["query_key_value"]  # RedPajama-INCITE: their default branch
    assert AUTHORS_LORA_TARGETS["falcon"] == ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
    gpt2 = _tiny(GPT2Config, n_embd=16, n_layer=1, n_head=2)
    with pytest.raises(ValueError, match=r"lora_targets: authors: .*model_type 'gpt2'.*all-linear"):
        resolve_lora_targets(gpt2, "authors")


def test_lora_on_a_tied_lm_head_leaves_the_embeddings_and_round_trips(tiny_model_dir, tmp_path) -> None:
    import torch
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert base.config.tie_word_embeddings and base.lm_head.weight is base.model.embed_tokens.weight
    embeddings = base.model.embed_tokens.weight.detach().clone()
    model = apply_lora(base, r=2, alpha=4, targets="authors")
    head = model.base_model.model.lm_head
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = torch.randint(0, base.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert head.lora_B["default"].weight.abs().sum() > 0  # the head's adapter learnt something …
    assert torch.equal(model.base_model.model.model.embed_tokens.weight, embeddings)  # … and the input side did not
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "adapter")
    again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    again.eval()
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, logits, atol=1e-6)


def test_lora_targets_config_is_parsed_once_and_the_old_spelling_still_works() -> None:
    assert parse_train_config(["--model", "m"]).lora_target_choice == "attention"
    assert parse_train_config(["--model", "m", "--lora_targets", "authors"]).lora_target_choice == "authors"
    listed = parse_train_config(["--model", "m", "--lora_targets", "[q_proj, v_proj]"])
    assert listed.lora_target_choice == ("q_proj", "v_proj")
    # scripts/study.sh's spelling: the older list field stands for lora_targets
    old = parse_train_config(["--model", "m", "--lora_target_modules", "[q_proj,k_proj,lm_head]"])
    assert old.lora_target_choice == ("q_proj", "k_proj", "lm_head") and old.lora_targets == "attention"
    with pytest.raises(ValueError, match=r"lora_targets .authors. and lora_target_modules .* disagree"):
        parse_train_config(["--model", "m", "--lora_targets", "authors", "--lora_target_modules", "[q_proj]"])
    with pytest.raises(ValueError, match="lora_targets"):
        parse_train_config(["--model", "m", "--lora_targets", "mlp"])
    with pytest.raises(ValueError, match="lora_targets: 'mlp' is not one of"):
        parse_lora_targets("mlp")


def test_the_paper_configs_and_grid_use_the_authors_settings() -> None:
    """configs/{gsm8k,…}.yaml and configs/grid/paper-gsm8k.yaml: the authors' targets, LR, epochs, batch, warm-up,
    weight decay and max length (their configs/trainer/*.yaml and parquet_creator.py)."""
    from pathlib import Path

    from segloss.config import load_yaml

    root = Path(__file__).resolve().parents[2] / "configs"
    authors = {  # dataset: (learning rate, epochs, batch, gradient accumulation, max_length)
        "gsm8k": (1e-5, 10, 2, 1, 128),
        "mathqa": (1e-4, 2, 2, 1, 1024),
        "openbookqa": (1e-4, 10, 2, 1, 128),
        "hellaswag": (1e-4, 1, 1, 2, 256),
    }
    for name, expected in authors.items():
        c = parse_train_config(["--config", str(root / f"{name}.yaml")])
        got = (c.learning_rate, c.num_train_epochs, c.per_device_train_batch_size, c.gradient_accumulation_steps)
        assert (*got, c.max_length) == expected, name
        assert (c.lora_target_choice, c.warmup_steps, c.weight_decay, c.seed) == ("authors", 500, 0.01, 42), name
        assert c.model == "meta-llama/Llama-2-7b-hf"
    grid = load_yaml(root / "grid" / "paper-gsm8k.yaml")
    assert "meta-llama/Llama-2-7b-hf" in grid["models"] and not any("mistral" in m.lower() for m in grid["models"])
    train = grid["train"]
    assert (train["learning_rate"], train["num_train_epochs"], train["per_device_train_batch_size"]) == (1e-5, 10, 2)
    assert (train["warmup_steps"], train["weight_decay"], train["max_length"]) == (500, 0.01, 128)
    assert train["lora_targets"] == "authors" and 42 in grid["seeds"]
