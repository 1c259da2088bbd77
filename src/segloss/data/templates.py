"""Prompt templates shared by training and evaluation, so both see the very same text.

* ``plain``: the dataset prompt as it is (``Question: …\\nAnswer: ``), the format segloss fine-tunes on.
* ``instruction``: the Alpaca-style format of instruction-tuned baselines (MAmmoTH, WizardMath, MetaMath…).
* ``chat``: the tokenizer's own chat template (user turn = the question, assistant turn = the answer); few-shot
  demonstrations become earlier user/assistant turns.

Conversation rows of the user's own data (``Example.messages``) are always rendered by the chat template (their
turns as they are, then the generation prompt), whatever the template: :func:`effective_template` says so.

Where an answer starts: the generation prompt drops the trailing spaces of the rendered prompt (``Answer:`` not
``Answer: ``), and a training row's completion starts right there, with that space (:func:`training_row`). BPE and
sentencepiece tokenizers glue a space to the word after it (``Ġ<<``, ``▁<<``), so the tokens TRL makes of prompt +
completion start with exactly the tokens of the generation prompt, and the first completion token is the one
generation has to produce.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal, get_args

from segloss.config import choice_error

TemplateName = Literal["plain", "instruction", "chat"]  # the type of every `template` setting
TEMPLATES: dict[str, str] = {
    "plain": "{prompt}",
    "instruction": "### Instruction:\n{question}\n\n### Response:\n",
    "chat": "",  # rendered by the tokenizer's chat template
}
assert tuple(TEMPLATES) == get_args(TemplateName), "TEMPLATES and TemplateName name the same templates"
_ANSWER_CUE = re.compile(r"\s*Answer:\s*$")


def check_template(template: str) -> None:
    if template not in TEMPLATES:  # configs are checked by their parser; this is for callers in Python
        raise ValueError(choice_error("template", template, tuple(TEMPLATES)))


def question_of(example_prompt: str) -> str:
    """The dataset prompt without its trailing ``Answer:`` cue (which instruction/chat formats replace)."""
    return _ANSWER_CUE.sub("", example_prompt)


def render(example_prompt: str, template: str) -> str:
    """``example_prompt`` in a text template (``plain``/``instruction``; ``chat`` needs :func:`build_prompt`)."""
    check_template(template)
    if template == "chat":
        raise ValueError("template: 'chat' is rendered with a tokenizer; call build_prompt(..., tokenizer=...)")
    return TEMPLATES[template].format(prompt=example_prompt, question=question_of(example_prompt))


def effective_template(examples: Sequence[Any], template: str) -> str:
    """``chat`` for conversation rows (``Example.messages``), which only the chat template renders; else
    ``template``. One file holds one form of rows, so the first example decides."""
    return "chat" if examples and getattr(examples[0], "messages", ()) else template


def _turns(example: Any) -> list[dict[str, str]]:
    """The turns before the answer: a conversation row's own, else one user turn holding the question."""
    if getattr(example, "messages", ()):
        return [dict(m) for m in example.messages]
    return [{"role": "user", "content": question_of(example.prompt)}]


def _chat_messages(examples: Sequence[Any], answers: Sequence[str]) -> list[dict[str, str]]:
    messages = []
    for i, example in enumerate(examples):
        messages.extend(_turns(example))
        if i < len(answers):
            messages.append({"role": "assistant", "content": answers[i]})
    return messages


def _chat_prompt(tokenizer: Any, examples: Sequence[Any], answers: Sequence[str]) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        if any(getattr(e, "messages", ()) for e in examples):
            raise ValueError(
                "dataset: `messages` rows are rendered by the tokenizer's chat template, and this tokenizer has none; "
                "use a chat model, or give the rows as prompt/completion"
            )
        raise ValueError(
            "template: 'chat' needs a tokenizer with a chat template; use --template plain or instruction"
        )
    text = tokenizer.apply_chat_template(_chat_messages(examples, answers), tokenize=False, add_generation_prompt=True)
    return str(text)


def build_prompt(example: Any, shots: Sequence[Any], template: str, tokenizer: Any = None) -> str:
    """The generation prompt: demonstrations (prompt + answer, same template) then the example's prompt.

    Text templates separate demonstrations by blank lines; ``chat`` makes them alternating user/assistant turns.
    Trailing spaces are dropped (see the module docstring).
    """
    check_template(template)
    if effective_template([example], template) == "chat":
        return _chat_prompt(tokenizer, [*shots, example], [s.answer for s in shots]).rstrip(" ")
    demos = [render(shot.prompt, template) + shot.answer for shot in shots]
    return "\n\n".join([*demos, render(example.prompt, template)]).rstrip(" ")


def training_row(example: Any, template: str, tokenizer: Any = None) -> dict[str, Any]:
    """The example as one TRL prompt/completion row (TRL tokenizes it, `segloss.data.tokenize_examples`).

    Text templates: ``prompt`` is the generation prompt (:func:`build_prompt`, trailing spaces dropped) and
    ``completion`` the dropped space plus the answer (TRL appends EOS). ``chat`` (and conversation rows): a
    conversational row, ``prompt`` the turns before the answer and ``completion`` the assistant turn, which TRL
    renders with the tokenizer's chat template.
    """
    if effective_template([example], template) == "chat":
        _chat_prompt(tokenizer, [example], [])  # a tokenizer without a chat template: the one-line error, here
        return {"prompt": _turns(example), "completion": [{"role": "assistant", "content": example.answer}]}
    rendered = render(example.prompt, template)
    prompt = rendered.rstrip(" ")
    return {"prompt": prompt, "completion": rendered[len(prompt) :] + example.answer}
