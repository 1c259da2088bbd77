"""Greedy batched generation with left padding and stop strings, and model loading for baseline mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Generated:
    """One generation: the decoded ``text`` (cut at the first stop string) and how many ``new_tokens`` the model
    produced for it (up to and including the token that completed a stop string or EOS; padding not counted)."""

    text: str
    new_tokens: int


#: ``generate_fn(prompts, max_new_tokens) -> texts``: what `evaluate` calls; injectable so tests need no model.
#: Items are plain strings or :class:`Generated` (which also records the number of new tokens).
GenerateFn = Callable[[Sequence[str], int], Sequence["str | Generated"]]


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_baseline(
    model: str, *, dtype: str = "float32", device: str | None = None, gguf_file: str | None = None
) -> tuple[Any, Any]:
    """A causal LM + tokenizer (folder, hub id or GGUF file; see :mod:`segloss.models.loading`), in eval mode."""
    from segloss.models.loading import load_model_and_tokenizer

    lm, tokenizer = load_model_and_tokenizer(model, dtype=dtype, gguf_file=gguf_file)
    return lm.to(resolve_device(device)).eval(), tokenizer


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (generation continues every row right after its prompt); EOS pads when there is no pad."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of ``stops``; unchanged when none occurs."""
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(ends)] if ends else text


def end_token_ids(tokenizer: Any) -> list[int]:
    """EOS and, for chat models, the end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        if token in vocab and vocab[token] not in ids:
            ids.append(vocab[token])
    return ids


def count_new_tokens(new_tokens: torch.Tensor, stop_ids: Sequence[int], pad_id: int | None) -> list[int]:
    """Per row of ``new_tokens [B, N]``: tokens up to and including the first stop id; finished rows are padded
    after that (``generate`` pads them with ``pad_id``), so without a stop id the count is the non-pad tokens."""
    counts = []
    for row in new_tokens.tolist():
        hits = [i for i, t in enumerate(row) if t in stop_ids]
        if hits:
            counts.append(hits[0] + 1)
        else:
            counts.append(sum(t != pad_id for t in row) if pad_id is not None else len(row))
    return counts


def make_generate_fn(
    model: Any,
    tokenizer: Any,
    *,
    max_length: int | None = None,
    stop_strings: Sequence[str] = (),
    add_special_tokens: bool = True,
) -> Callable[[Sequence[str], int], list[Generated]]:
    """A greedy generate function over ``model.generate`` that stops at EOS, the end-of-turn token and
    ``stop_strings`` (transformers' ``stop_strings`` criterion) and cuts the text at the first stop string.

    Prompts are encoded by :func:`segloss.data.encode_prompts` (as in training, left padding, BOS kept; prompts over
    ``max_length`` tokens keep their end). ``generate.n_truncated`` counts the prompts that were cut.
    """
    from segloss.data import encode_prompts

    prepare_tokenizer(tokenizer)
    device = getattr(model, "device", torch.device("cpu"))
    limit = max_length or 10**9
    stops = [s for s in stop_strings if s]
    end_ids = end_token_ids(tokenizer)

    def generate(prompts: Sequence[str], max_new_tokens: int) -> list[Generated]:
        encoded = encode_prompts(prompts, tokenizer, limit, add_special_tokens=add_special_tokens)
        generate.n_truncated += encoded.pop("n_truncated")  # type: ignore[attr-defined]
        batch = {k: v.to(device) for k, v in encoded.items()}
        extra = {"stop_strings": stops, "tokenizer": tokenizer} if stops else {}
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=end_ids,
                **extra,
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]  # [B, <= max_new_tokens]: left padding aligns the ends
        counts = _counts_with_stops(new_tokens, tokenizer, end_ids, stops)
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [Generated(cut_at_stop(t, stops), n) for t, n in zip(texts, counts, strict=True)]

    generate.n_truncated = 0  # type: ignore[attr-defined]
    return generate


def _counts_with_stops(new_tokens: torch.Tensor, tokenizer: Any, end_ids: list[int], stops: list[str]) -> list[int]:
    """New tokens per row: up to the end token, else up to the token that completed the first stop string."""
    counts = count_new_tokens(new_tokens, end_ids, tokenizer.pad_token_id)
    if not stops:
        return counts
    for row, ids in enumerate(new_tokens.tolist()):
        text = ""
        for i, token in enumerate(ids[: counts[row]]):
            text += tokenizer.decode([token])
            if any(s in text for s in stops):
                counts[row] = i + 1
                break
    return counts
