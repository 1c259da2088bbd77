"""Greedy batched generation with left padding, and model loading for baseline mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

#: ``generate_fn(prompts, max_new_tokens) -> texts``: what `evaluate` calls; injectable so tests need no model.
GenerateFn = Callable[[Sequence[str], int], list[str]]


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_baseline(model: str, *, dtype: str = "float32", device: str | None = None) -> tuple[Any, Any]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a local directory or hub id, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from segloss.hub import resolve_model

    model, local_only = resolve_model(model)  # empty folders and unreachable hub ids fail here, in seconds
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_only)
        lm: Any = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype), local_files_only=local_only)
    except OSError as err:
        raise FileNotFoundError(
            f"model: cannot load {model!r} ({err}); give a local model directory or a cached hub id with --model"
        ) from err
    return lm.to(resolve_device(device)).eval(), tokenizer


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (generation continues every row right after its prompt); EOS pads when there is no pad."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def make_generate_fn(model: Any, tokenizer: Any, *, max_length: int | None = None) -> GenerateFn:
    """A greedy :data:`GenerateFn` over ``model.generate``; prompts over ``max_length`` tokens keep their end.

    Prompts are encoded by :func:`segloss.data.encode_prompts` (as in training, left padding, BOS kept).
    """
    from segloss.data import encode_prompts

    prepare_tokenizer(tokenizer)
    device = getattr(model, "device", torch.device("cpu"))
    limit = max_length or 10**9

    def generate(prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        batch = {k: v.to(device) for k, v in encode_prompts(prompts, tokenizer, limit).items()}
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]  # [B, <= max_new_tokens]: left padding aligns the ends
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    return generate
