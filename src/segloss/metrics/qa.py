"""Multiple-choice metrics (OpenBookQA, HellaSwag): generated-letter accuracy and log-likelihood accuracy.

Two views, both reported by ``segloss eval``:

* generation: :func:`score_choice` — is the first choice letter of the generated text the right one;
* log-likelihood (as lm-evaluation-harness scores these sets): :func:`loglikelihood_choice_scores` — which
  continuation has the highest summed log-probability (``acc``) or the highest log-probability per character
  (``acc_norm``, Gao et al., 2021, lm-evaluation-harness ``multiple_choice`` output type).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any


def _letters(n_choices: int) -> str:
    if not 1 <= n_choices <= 26:
        raise ValueError(f"n_choices must be between 1 and 26, got {n_choices}")
    return string.ascii_uppercase[:n_choices]


def parse_choice_letter(text: str | None, n_choices: int = 4) -> str | None:
    """The first choice letter (``A``…) of ``text``, upper-cased; None when there is none.

    A lone letter with punctuation (``"d"``, ``"(B)"``, ``"C."``) counts in either case; inside longer text only an
    upper-case letter standing alone counts (``"Answer: D because"`` → ``"D"``), so the article "a" is not read as
    choice A.
    """
    letters = _letters(n_choices)
    stripped = (text or "").strip()
    lone = re.fullmatch(r"[\(\[]?([A-Za-z])[\)\]\.:]?", stripped)
    if lone and lone.group(1).upper() in letters:
        return lone.group(1).upper()
    match = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", stripped)
    return match.group(1) if match else None


def score_choice(generated: str, reference: str, n_choices: int = 4) -> dict[str, float]:
    """``{"accuracy": 1.0}`` when the first generated choice letter equals the reference letter, else 0.0."""
    expected = parse_choice_letter(reference, n_choices)
    if expected is None:
        raise ValueError(f"reference {reference!r} holds no choice letter among {_letters(n_choices)}")
    return {"accuracy": float(parse_choice_letter(generated, n_choices) == expected)}


def choice_loglikelihoods(model: Any, tokenizer: Any, prompt: str, choices: Sequence[str]) -> list[float]:
    """Summed log-probability of each continuation ``choices[i]`` given ``prompt`` (one batched forward pass).

    As lm-evaluation-harness does, ``prompt + choice`` is tokenized whole and the continuation is the tokens after
    those of ``prompt`` alone; the caller adds the delimiter (usually a leading space) to the choices.
    """
    import torch

    from segloss.data import pad_token_id

    if not choices:
        raise ValueError("choices is empty; a multiple-choice example needs at least one choice")
    context_len = len(tokenizer(prompt)["input_ids"])
    encoded = [list(tokenizer(prompt + choice)["input_ids"]) for choice in choices]
    width = max(len(ids) for ids in encoded)
    pad_id = pad_token_id(tokenizer)  # masked out below; the caller's tokenizer is not modified
    device = getattr(model, "device", "cpu")
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)  # [C, T], right padding
    attention = torch.zeros_like(input_ids)
    for i, ids in enumerate(encoded):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
    with torch.no_grad():
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float().cpu()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # [C, T-1, V]: position t predicts token t+1
    target = logprobs.gather(-1, input_ids[:, 1:, None])[..., 0]  # [C, T-1]
    positions = torch.arange(1, width)[None, :]  # index of the predicted token
    lengths = torch.tensor([len(ids) for ids in encoded])[:, None]
    continuation = (positions >= context_len) & (positions < lengths)  # [C, T-1]
    sums = (target * continuation).sum(dim=1)
    # A choice that adds no token cannot be scored: it must never win.
    sums[continuation.sum(dim=1) == 0] = float("-inf")
    return sums.tolist()


def loglikelihood_choice_scores(model: Any, tokenizer: Any, prompt: str, choices: Sequence[str]) -> tuple[int, int]:
    """``(acc prediction, acc_norm prediction)``: the index of the choice with the highest summed log-probability,
    and the index with the highest log-probability divided by the choice's length in characters."""
    sums = choice_loglikelihoods(model, tokenizer, prompt, choices)
    acc = max(range(len(sums)), key=lambda i: sums[i])
    acc_norm = max(range(len(sums)), key=lambda i: sums[i] / max(len(choices[i]), 1))
    return acc, acc_norm
