"""SeglossSFTTrainer with TRL's real SFTTrainer on a tiny model: answer mask = TRL's completion tokens, CE alone =
plain SFTTrainer, exact gradient accumulation (SGD step at GA 2 × batch 1 = GA 1 × batch 2), logged components; TRL
parity (its metrics, eval_ce/eval_task, messages rows, padding-free batches, the difference said at start)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from segloss.integrations.trl import SeglossSFTTrainer
from segloss.losses import IGNORE_INDEX, LossSpec, causal_shift

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


# ------------------------------------------------------------------ TRL parity (issue 20 item 3)
def test_logs_keep_trls_metrics_next_to_the_components(tiny_model_dir, tmp_path) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    trainer = SeglossSFTTrainer(
        model=model,
        args=_args(tmp_path, max_steps=2),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert {"ce", "task", "total", "entropy", "mean_token_accuracy", "num_tokens"} <= set(entry)
        assert 0.0 <= entry["mean_token_accuracy"] <= 1.0
        assert 0.0 < entry["entropy"] <= math.log(len(tokenizer)) + 1e-4  # at most the uniform distribution's
    # two steps of 2 + 1 rows: the epoch. num_tokens counts the real tokens trained on so far, as TRL does
    assert logs[-1]["num_tokens"] == float(_batch(trainer)["attention_mask"].sum()) > logs[0]["num_tokens"]


def test_token_metrics_match_trls_on_the_same_batch(tiny_model_dir, tmp_path) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    model.eval()
    common = {"train_dataset": Dataset.from_list(ROWS), "processing_class": tokenizer}
    ours = SeglossSFTTrainer(model=model, args=_args(tmp_path), loss="ce", ce_weight=1.0, **common)
    plain = SFTTrainer(model=model, args=_args(tmp_path, completion_only_loss=False), **common)
    with torch.no_grad():
        ours.compute_loss(model, _batch(ours))
        plain.compute_loss(model, _batch(plain))
    for name in ("entropy", "mean_token_accuracy"):
        assert ours._metrics["eval"][name][0] == pytest.approx(plain._metrics["eval"][name][0], rel=1e-5), name


def test_fused_path_metrics_equal_the_materialised_ones(generator) -> None:
    from segloss.integrations.trl import token_statistics

    hidden = torch.randn(2, 5, 4, generator=generator)
    head = torch.nn.Linear(4, 7)
    labels = torch.randint(0, 7, (2, 5), generator=generator)
    labels[0, :2] = IGNORE_INDEX
    fused = token_statistics(hidden, labels, head)
    materialised = token_statistics(head(hidden), labels)
    assert torch.allclose(fused[0], materialised[0]) and torch.equal(fused[1], materialised[1])
    assert int(fused[2]) == 8


def test_evaluation_logs_eval_ce_and_eval_task(tiny_model_dir, tmp_path) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    trainer = SeglossSFTTrainer(
        model=model,
        args=_args(tmp_path, per_device_eval_batch_size=3),
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        loss="lovasz",
        ce_weight=0.6,
    )
    metrics = trainer.evaluate()
    assert {"eval_ce", "eval_task", "eval_entropy", "eval_mean_token_accuracy"} <= set(metrics)
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_ce"] + metrics["eval_task"], rel=1e-5)  # one batch
    batch = _batch(trainer)
    model.eval()
    with torch.no_grad():
        logits = model(**trainer.model_inputs(batch)).logits
        terms = trainer.combined_loss.components(logits, *causal_shift(*trainer.loss_targets(batch)))
    assert metrics["eval_ce"] == pytest.approx(float(terms["ce"]), rel=1e-5)
    assert metrics["eval_task"] == pytest.approx(float(terms["lovasz"]), rel=1e-5)


def test_messages_rows_put_the_task_loss_on_the_assistant_tokens_only(tiny_model_dir, tmp_path) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": r["completion"]},
            ]
        }
        for r in ROWS
    ]
    trainer = SeglossSFTTrainer(
        model=model,
        args=_args(tmp_path, max_length=None),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    batch = _batch(trainer)
    labels, answer = trainer.loss_targets(batch)
    for i, row in enumerate(rows):
        length = int(batch["attention_mask"][i].sum())
        start = int(answer[i].ne(IGNORE_INDEX).nonzero()[0])
        before = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        assert tokenizer.decode(batch["input_ids"][i, :start]) == before  # no system or user token in the mask
        assert tokenizer.decode(batch["input_ids"][i, start:length]).strip() == ROWS[i]["completion"].strip()
        assert answer[i, start:length].ne(IGNORE_INDEX).all() and labels[i, :length].ne(IGNORE_INDEX).all()
    bad = Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(ValueError, match="row 0 ends with a 'user' turn"):
        SeglossSFTTrainer(model=model, args=_args(tmp_path), train_dataset=bad, processing_class=tokenizer)


@pytest.mark.parametrize("loss", ["gdice", "dice", "tversky", "lovasz"])
def test_padding_free_losses_equal_the_padded_batchs(tiny_model_dir, tmp_path, loss) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    model.eval()
    values = {}
    for padding_free in (False, True):
        trainer = SeglossSFTTrainer(
            model=model,
            args=_args(tmp_path, padding_free=padding_free, max_length=None),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
            loss=loss,
            loss_options={loss: {"group": "sequence"}},
        )
        batch = _batch(trainer)
        assert ("attention_mask" in batch) is not padding_free
        with torch.no_grad():
            values[padding_free] = float(trainer.compute_loss(model, batch))
    assert values[True] == pytest.approx(values[False], rel=1e-5)


def test_unpack_sequences_gives_one_sequence_per_row() -> None:
    from segloss.integrations.trl import unpack_sequences

    flat = torch.tensor([[10, 11, 12, 20, 21, 30]])
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])
    assert unpack_sequences(flat, positions, -1).tolist() == [[10, 11, 12], [20, 21, -1], [30, -1, -1]]


def test_the_difference_from_trls_default_is_said_once_at_start(tiny_model_dir, tmp_path, caplog) -> None:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    with caplog.at_level("WARNING", logger="segloss.trl"):
        SeglossSFTTrainer(
            model=model, args=_args(tmp_path), train_dataset=Dataset.from_list(ROWS), processing_class=tokenizer
        )
    said = [r for r in caplog.records if "CE on every token" in r.getMessage()]
    assert len(said) == 1 and "completion_only_loss=True" in said[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="segloss.trl"):  # the user chose: nothing to say
        SeglossSFTTrainer(
            model=model,
            args=_args(tmp_path, completion_only_loss=False),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
        )
    assert not [r for r in caplog.records if "CE on every token" in r.getMessage()]


def test_padding_collator_pads_right_with_eos_and_minus_100(tiny_model_dir) -> None:
    from segloss.data import pad_token_id
    from segloss.integrations.trl import padding_collator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token is None and pad_token_id(tokenizer) == eos  # no pad token → EOS, as the paper does
    rows = [{"input_ids": [1, 5, 6], "completion_mask": [0, 1, 1]}, {"input_ids": [1, 7], "completion_mask": [0, 1]}]
    batch = padding_collator(tokenizer)(rows)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[1, 5, 6], [1, 7, -100]]
    assert batch["completion_mask"].tolist() == [[0, 1, 1], [0, 1, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_entropy_and_accuracy_are_computed_on_the_logging_steps_only(tiny_model_dir, tmp_path, monkeypatch) -> None:
    from segloss.integrations import trl as integration

    calls = []
    original = integration.token_statistics
    monkeypatch.setattr(integration, "token_statistics", lambda *a, **k: calls.append(1) or original(*a, **k))
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    trainer = SeglossSFTTrainer(
        model=model,
        args=_args(tmp_path, max_steps=3, logging_steps=2, per_device_train_batch_size=1),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )
    trainer.train()
    (logged,) = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged["step"] == 2 and "entropy" in logged and len(calls) == 1  # step 2 of 3 logs; 1 and 3 do not
