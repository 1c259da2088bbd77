"""Prompt templates and seeded k-shot demonstrations."""

from __future__ import annotations

import pytest

from segloss.data import Example
from segloss.data.templates import training_row
from segloss.evaluation.prompts import build_prompt, choose_shots, render

EX = Example(id="1", prompt="Question: Tom has 3 apples. How many?\nAnswer: ", answer="<<3=3>> #### 3")
TRAIN = [Example(id=str(i), prompt=f"Question: q{i}\nAnswer: ", answer=f"#### {i}") for i in range(10)]


def test_templates():
    assert render(EX.prompt, "plain") == EX.prompt
    assert render(EX.prompt, "instruction") == (
        "### Instruction:\nQuestion: Tom has 3 apples. How many?\n\n### Response:\n"
    )
    with pytest.raises(ValueError, match="template"):
        render(EX.prompt, "chat")


def test_few_shot_is_seeded_and_distinct():
    shots = choose_shots(TRAIN, 4, seed=1)
    assert shots == choose_shots(TRAIN, 4, seed=1)
    assert shots != choose_shots(TRAIN, 4, seed=2)
    assert len({s.id for s in shots}) == 4


def test_few_shot_larger_than_train_split():
    with pytest.raises(ValueError, match=r"few_shot: 11 .* only 10"):
        choose_shots(TRAIN, 11, seed=0)


def test_build_prompt_demonstrations_first():
    shots = TRAIN[:2]
    prompt = build_prompt(EX, shots, "plain")
    # The generation prompt drops the trailing space: whole-text tokenization glues it to the answer's first token.
    assert prompt == "Question: q0\nAnswer: #### 0\n\nQuestion: q1\nAnswer: #### 1\n\n" + EX.prompt.rstrip(" ")
    assert build_prompt(EX, [], "plain") == EX.prompt.rstrip(" ")


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = CHATML
    return tokenizer


def test_chat_template_few_shot_is_alternating_turns(chat_tokenizer):
    prompt = build_prompt(EX, TRAIN[:2], "chat", chat_tokenizer)
    assert prompt == (
        "<|im_start|>user\nQuestion: q0<|im_end|>\n<|im_start|>assistant\n#### 0<|im_end|>\n"
        "<|im_start|>user\nQuestion: q1<|im_end|>\n<|im_start|>assistant\n#### 1<|im_end|>\n"
        "<|im_start|>user\nQuestion: Tom has 3 apples. How many?<|im_end|>\n<|im_start|>assistant\n"
    )
    row = training_row(EX, "chat", chat_tokenizer)  # TRL renders it with the same template
    assert chat_tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True) == (
        build_prompt(EX, [], "chat", chat_tokenizer)
    )
    assert row["completion"] == [{"role": "assistant", "content": EX.answer}]


def test_chat_template_needs_a_tokenizer_with_one():
    with pytest.raises(ValueError, match="chat template"):
        build_prompt(EX, [], "chat", None)
