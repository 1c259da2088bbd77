"""Multiple-choice metrics: letter parsing, generated accuracy and lm-evaluation-harness style log-likelihood."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from segloss.metrics.qa import choice_loglikelihoods, loglikelihood_choice_scores, parse_choice_letter, score_choice


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("D", "D"),
        (" d", "D"),
        ("(B)", "B"),
        ("C.", "C"),
        ("Answer: D because", "D"),
        ("a plant needs light, so B", "B"),  # the article "a" is not choice A
        ("E", None),  # outside 4 choices
        ("", None),
        (None, None),
        ("none of them", None),
    ],
)
def test_parse_choice_letter(text, letter):
    assert parse_choice_letter(text) == letter


def test_parse_choice_letter_more_choices_and_bad_n():
    assert parse_choice_letter("E", n_choices=5) == "E"
    with pytest.raises(ValueError, match="n_choices"):
        parse_choice_letter("A", n_choices=0)


def test_score_choice():
    assert score_choice("D\nQuestion: next", "D") == {"accuracy": 1.0}
    assert score_choice("B", "Answer: D") == {"accuracy": 0.0}
    assert score_choice("", "A") == {"accuracy": 0.0}
    with pytest.raises(ValueError, match="reference"):
        score_choice("A", "")


class CharTokenizer:
    """One token per character (its code point): token counts equal character counts."""

    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, text):
        return {"input_ids": [ord(c) for c in text]}


class FixedModel(torch.nn.Module):
    """Predicts the same next-token distribution everywhere: p('a') = 1/2, each other of 127 tokens 1/254."""

    def __init__(self):
        super().__init__()
        probs = torch.full((128,), 0.5 / 127)
        probs[ord("a")] = 0.5
        self.register_buffer("logits", probs.log())

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, 128))


def test_loglikelihood_acc_and_acc_norm_hand_computed():
    # "ab": log(1/2) + log(1/254) = -6.23 (per char -3.12); "aaaaaaaaaa": 10 log(1/2) = -6.93 (per char -0.69).
    # acc prefers the higher sum ("ab"), acc_norm the higher per-character value ("aaaaaaaaaa").
    sums = choice_loglikelihoods(FixedModel(), CharTokenizer(), "Q:", ["ab", "aaaaaaaaaa"])
    assert sums == pytest.approx([math.log(0.5) + math.log(0.5 / 127), 10 * math.log(0.5)], rel=1e-5)
    assert loglikelihood_choice_scores(FixedModel(), CharTokenizer(), "Q:", ["ab", "aaaaaaaaaa"]) == (0, 1)
    assert loglikelihood_choice_scores(FixedModel(), CharTokenizer(), "Q:", ["b", "a", "bb"]) == (1, 1)


def test_loglikelihood_empty_choices_rejected():
    with pytest.raises(ValueError, match="choices"):
        choice_loglikelihoods(FixedModel(), CharTokenizer(), "Q:", [])


def test_loglikelihood_batched_matches_one_by_one(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt = "Question: The sun is responsible for\nAnswer:"
    choices = [" plants", " kids growing up", " a"]
    batched = choice_loglikelihoods(model, tokenizer, prompt, choices)
    context = len(tokenizer(prompt)["input_ids"])
    for choice, value in zip(choices, batched, strict=True):
        ids = torch.tensor([tokenizer(prompt + choice)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        expected = sum(logp[t - 1, ids[0, t]].item() for t in range(context, ids.shape[1]))
        assert value == pytest.approx(expected, abs=1e-4)
        assert value < 0
