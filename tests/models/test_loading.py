"""segloss.models.loading on the tiny local model: where --model points, dtypes, and the errors that name the fix."""

from __future__ import annotations

import pytest
import torch

from segloss.models.loading import TORCH_DTYPES, load_model_and_tokenizer, resolve_dtype, resolve_model_source
from segloss.training import TrainConfig
from segloss.training.lora import apply_lora


def test_gguf_file_is_split_into_folder_and_name(tmp_path):
    (tmp_path / "m.Q4.gguf").write_bytes(b"GGUF")
    assert resolve_model_source(str(tmp_path / "m.Q4.gguf")) == (str(tmp_path), "m.Q4.gguf")
    assert resolve_model_source(str(tmp_path), "m.Q4.gguf") == (str(tmp_path), "m.Q4.gguf")
    assert resolve_model_source("org/name") == ("org/name", None)  # a hub id passes through


def test_missing_files_name_the_field_and_what_exists(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    with pytest.raises(FileNotFoundError, match=r"gguf_file: 'b.gguf' is not in .*GGUF files there: a.gguf"):
        resolve_model_source(str(tmp_path), "b.gguf")
    with pytest.raises(FileNotFoundError, match="model: no GGUF file"):
        resolve_model_source(str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match="gguf_file: --model already names the GGUF file"):
        resolve_model_source(str(tmp_path / "a.gguf"), "a.gguf")
    with pytest.raises(FileNotFoundError, match="model: no model directory"):
        resolve_model_source("./nowhere")


def test_config_fields_are_validated():
    with pytest.raises(ValueError, match="torch_dtype"):
        TrainConfig(model="m", torch_dtype="int8")
    with pytest.raises(ValueError, match="template"):
        TrainConfig(model="m", template="alpaca")
    with pytest.raises(ValueError, match="gguf_file"):
        TrainConfig(model="x.gguf", gguf_file="x.gguf")
    with pytest.raises(ValueError, match="torch_dtype: 'half' is not one of auto, float32, bfloat16, float16"):
        resolve_dtype("half")
    assert TORCH_DTYPES == ("auto", "float32", "bfloat16", "float16") and resolve_dtype("auto") == "auto"


def test_bfloat16_base_keeps_lora_weights_in_float32(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir), dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and tokenizer.pad_token == tokenizer.eos_token
    lora = apply_lora(model, r=4, alpha=8)
    trainable = [p for p in lora.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # peft upcasts the adapter
    frozen = [p for n, p in lora.named_parameters() if "lora_" not in n]
    assert all(p.dtype == torch.bfloat16 for p in frozen)


def test_auto_dtype_is_the_checkpoint_dtype(tiny_model_dir):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), dtype="auto")
    assert model.dtype == torch.float32  # the tiny model was saved in float32
