"""SeglossSFTTrainer with TRL's real SFTTrainer on a tiny model: answer mask = TRL's completion tokens, CE alone =
plain SFTTrainer, exact gradient accumulation (SGD step at GA 2 × batch 1 = GA 1 × batch 2), logged components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

trl = pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from segloss.integrations.trl import SeglossSFTTrainer  # noqa: E402
from segloss.losses import IGNORE_INDEX, LossSpec  # noqa: E402

# Prompts and completions of different lengths, so micro-batches hold unequal numbers of targets.
ROWS = [
    {"prompt": "Question: Tom has 3 apples and buys 4 more. How many?\nAnswer:", "completion": " <<3+4=7>> #### 7"},
    {"prompt": "Question: 2 + 2?\nAnswer:", "completion": " 2 plus 2 is <<2+2=4>> so the answer is #### 4"},
    {"prompt": "Question: the sun is responsible for\nAnswer:", "completion": " D"},
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model_and_tokenizer(model_dir: Path) -> tuple[Any, Any]:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), tokenizer


def _args(tmp_path: Path, **overrides: Any) -> SFTConfig:
    settings: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "learning_rate": 0.5,
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "disable_tqdm": True,
        "use_cpu": True,
        "bf16": False,  # SFTConfig turns bf16 autocast on by default, also on CPU: compare in float32
        "max_length": 64,
        "seed": 0,
    }
    return SFTConfig(**{**settings, **overrides})


def _conversational(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "completion": [{"role": "assistant", "content": r["completion"]}],
        }
        for r in rows
    ]


def _batch(trainer: Any, n: int = 3) -> dict[str, torch.Tensor]:
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


@pytest.mark.parametrize("kind", ["text", "conversational"])
def test_answer_mask_is_trls_completion_tokens(tiny_model_dir, tmp_path, kind) -> None:
    rows = ROWS if kind == "text" else _conversational(ROWS)
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    ours = SeglossSFTTrainer(
        model=model, args=_args(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    plain = SFTTrainer(
        model=model,
        args=_args(tmp_path, completion_only_loss=True),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    batch, reference = _batch(ours), _batch(plain)
    labels, answer = ours.loss_targets(batch)
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert torch.equal(answer, reference["labels"])  # TRL's completion-only labels: the completion tokens
    assert torch.equal(labels, batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX))
    prompt_tokens = (labels != IGNORE_INDEX) & (answer == IGNORE_INDEX)
    assert prompt_tokens.sum(1).gt(0).all() and answer.ne(IGNORE_INDEX).sum(1).gt(0).all()


def test_completion_only_loss_restricts_ce_to_the_completion(tiny_model_dir, tmp_path) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    trainer = SeglossSFTTrainer(
        model=model,
        args=_args(tmp_path, completion_only_loss=True),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )
    labels, answer = trainer.loss_targets(_batch(trainer))
    assert torch.equal(labels, answer)


def test_ce_alone_is_plain_sft_trainer(tiny_model_dir, tmp_path) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    model.eval()
    ours = SeglossSFTTrainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        loss="ce",
        ce_weight=1.0,
    )
    plain = SFTTrainer(
        model=model,
        args=_args(tmp_path, completion_only_loss=False),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )
    with torch.no_grad():
        ours_loss = ours.compute_loss(model, _batch(ours))
        plain_loss = plain.compute_loss(model, _batch(plain))
    assert float(ours_loss) == pytest.approx(float(plain_loss), rel=1e-5)
    assert ours.loss_spec == LossSpec({"ce": 1.0})


def _one_sgd_step(
    model_dir: Path, tmp_path: Path, loss: str, batch: int, accumulation: int
) -> dict[str, torch.Tensor]:
    model, tokenizer = _model_and_tokenizer(model_dir)
    trainer = SeglossSFTTrainer(
        model=model,
        args=_args(tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation),
        train_dataset=Dataset.from_list(ROWS[:2]),
        processing_class=tokenizer,
        loss=loss,
        ce_weight=0.5,
    )
    trainer.train()
    assert {"ce", "task", "total"} <= set(trainer.state.log_history[0])
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir, tmp_path, loss) -> None:
    before = _model_and_tokenizer(tiny_model_dir)[0].state_dict()
    big = _one_sgd_step(tiny_model_dir, tmp_path / "big", loss, batch=2, accumulation=1)
    accumulated = _one_sgd_step(tiny_model_dir, tmp_path / "ga", loss, batch=1, accumulation=2)
    moved = max(float((big[n] - before[n]).abs().max()) for n in big)
    assert moved > 1e-3  # the step did something measurable
    for name, value in big.items():
        assert torch.allclose(accumulated[name], value, rtol=1e-5, atol=1e-7), name


def test_ga_rows_have_unequal_token_counts(tiny_model_dir, tmp_path) -> None:
    # Without the exact weighting the GA test above would fail: the two micro-batches hold different counts.
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    trainer = SeglossSFTTrainer(
        model=model, args=_args(tmp_path), train_dataset=Dataset.from_list(ROWS[:2]), processing_class=tokenizer
    )
    labels, answer = trainer.loss_targets(_batch(trainer, 2))
    assert (
        labels.ne(IGNORE_INDEX).sum(1).unique().numel() == 2 and answer.ne(IGNORE_INDEX).sum(1).unique().numel() == 2
    )


def test_logged_components_add_up(tiny_model_dir, tmp_path) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    trainer = SeglossSFTTrainer(
        model=model,
        args=_args(tmp_path, max_steps=2, learning_rate=1e-3, optim="adamw_torch"),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        loss="ce=0.5,focal=0.25,lovasz=0.25",
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["total"] == pytest.approx(entry["ce"] + entry["task"], rel=1e-5)
        assert entry["task"] == pytest.approx(entry["task_focal"] + entry["task_lovasz"], rel=1e-5)
        assert entry["loss"] == pytest.approx(entry["total"], rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "dicey"}, "unknown loss"),
        ({"compute_loss_func": lambda *a, **k: 0}, "compute_loss_func"),
        ({"packing": True}, "packing"),
    ],
)
def test_bad_settings_are_clear_errors(tiny_model_dir, tmp_path, kwargs, message) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    packing = kwargs.pop("packing", False)
    with pytest.raises(ValueError, match=message):
        SeglossSFTTrainer(
            model=model,
            args=_args(tmp_path, packing=packing),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
            **kwargs,
        )


def test_peft_config_trains_only_the_adapter(tiny_model_dir, tmp_path) -> None:
    from peft import LoraConfig

    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = SeglossSFTTrainer(
        model=model,
        args=_args(tmp_path, learning_rate=1e-2, optim="adamw_torch"),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        loss="focal",
    )
    trainer.train()
    trained = dict(trainer.model.named_parameters())
    lora = [p for name, p in trained.items() if "lora_B" in name]
    assert lora and any(float(p.abs().max()) > 0 for p in lora)  # B starts at zero: the step moved it
    frozen = {name.replace("base_model.model.", "").replace(".base_layer", ""): p for name, p in trained.items()}
    compared = [name for name in base if name in frozen]
    assert len(compared) == len(base) and all(torch.equal(frozen[name], base[name]) for name in compared)
