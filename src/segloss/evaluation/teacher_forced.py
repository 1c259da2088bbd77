"""Teacher-forced answer accuracy: the accuracy the authors log while training (docs/fidelity.md).

The authors' ``Trainer`` evaluates with ``preprocess_logits_for_metrics`` = argmax over the vocabulary and decodes
those argmax ids as if they were a generation. Every token is then predicted from the **gold** prefix: a wrong
step never derails the next one, and the final number is predicted right after the gold formulas that already
contain it. The score is therefore an upper bound on, not an estimate of, generated exact match; segloss reports it
only on request (``segloss eval --teacher-forced``) and never in place of ``exact_match``.

Per example, on the answer tokens (answer + EOS, the positions ``completion_mask`` marks, after the causal shift):

* ``teacher_forced_token_accuracy``: share of answer tokens whose argmax is the gold token;
* ``teacher_forced_exact_match``: :func:`segloss.metrics.formulas.exact_match` of the decoded argmax tokens;
* ``teacher_forced_exact_match_authors``: the same text scored with the authors' own pattern
  (:func:`segloss.metrics.formulas.exact_match_authors`).

Examples that ``tokenize_examples`` drops (answer longer than ``max_length``) get NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from segloss.data import Example, tokenize_examples
from segloss.losses import IGNORE_INDEX
from segloss.metrics.formulas import exact_match, exact_match_authors

TEACHER_FORCED_METRICS = (
    "teacher_forced_token_accuracy",
    "teacher_forced_exact_match",
    "teacher_forced_exact_match_authors",
)


def teacher_forced_rows(
    model: Any, tokenizer: Any, examples: Sequence[Example], *, max_length: int = 1024, batch_size: int = 8
) -> list[dict[str, float]]:
    """One dict of :data:`TEACHER_FORCED_METRICS` per example, from one forward pass per batch (no generation).

    The examples are tokenized exactly as for training (:func:`segloss.data.tokenize_examples`) and padded on the
    right (:func:`segloss.integrations.trl.padding_collator`, TRL's collator).
    """
    import torch

    from segloss.integrations.trl import padding_collator

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    features, stats = tokenize_examples(examples, tokenizer, max_length)
    rows = [dict.fromkeys(TEACHER_FORCED_METRICS, math.nan) for _ in examples]
    collate = padding_collator(tokenizer)
    device = getattr(model, "device", torch.device("cpu"))
    for start in range(0, len(features), batch_size):
        batch = collate([features[i] for i in range(start, min(start + batch_size, len(features)))])
        with torch.no_grad():
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
        predicted = logits[:, :-1].argmax(dim=-1).cpu()  # [B, T-1]: position t predicts token t+1
        targets = batch["labels"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)[:, 1:]  # [B, T-1]
        for offset in range(predicted.shape[0]):
            index = stats.kept_indices[start + offset]
            rows[index] = _score(predicted[offset], targets[offset], examples[index].answer, tokenizer)
    return rows


def _score(predicted: Any, target: Any, reference: str, tokenizer: Any) -> dict[str, float]:
    answer = target != IGNORE_INDEX  # [T-1]
    ids = predicted[answer]
    text = tokenizer.decode(ids.tolist(), skip_special_tokens=True)
    return {
        "teacher_forced_token_accuracy": float((ids == target[answer]).float().mean()),
        "teacher_forced_exact_match": exact_match(text, reference),
        "teacher_forced_exact_match_authors": exact_match_authors(text, reference),
    }
