from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_model_round_trips_through_auto_classes(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer("<<12+3=15>> #### 15")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.pad_token is None  # mimics Llama-style tokenizers
    digits = [tokenizer.convert_ids_to_tokens(i) for i in tokenizer("123")["input_ids"][1:]]
    assert digits == ["1", "2", "3"]  # one token per digit
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<<12+3=15>> #### 15"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.num_hidden_layers == 2
