"""Greedy batched generation with left padding and stop strings, and model loading for baseline mode.

Two things keep a CPU eval from wasting most of its time:

* Few-shot prompts all begin with the same demonstrations (488 of a 4-shot GSM8K prompt's 517–601 tokens).
  :class:`PrefixCache` computes the key/value cache of that shared beginning once and every batch continues from a
  copy of it, so each prompt only runs its own question through the model.
* ``model.generate`` keeps a batch decoding until its longest row ends, finished rows included. Generation runs in
  rounds of :data:`ROUND_TOKENS` new tokens; between rounds the rows that ended leave the batch and the others go on
  from their prompt plus what they wrote, so one answer that never stops no longer holds up the rest.

Both change no generation beyond float rounding (greedy decoding from the same tokens).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: A shared prompt beginning shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 16
#: New tokens a batch generates before its finished rows leave it (see :func:`make_generate_fn`).
ROUND_TOKENS = 64


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
    """Left padding (generation continues every row right after its prompt) on the tokenizer evaluation loaded; its
    pad token was set when it was loaded (`segloss.models.loading.ensure_pad_token`)."""
    tokenizer.padding_side = "left"
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


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row shares, leaving each row at least one token of its own (``generate``
    needs one new input token per row)."""
    return min([len(r) - 1 for r in rows] + [_common_length(rows[0], r) for r in rows[1:]])


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _forward_parameters(model: Any) -> Any:
    """The parameters of the transformers model's ``forward`` (a peft wrapper's is ``**kwargs``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inspect.signature(base.forward).parameters


def _cache_kwarg(model: Any) -> str:
    """The name under which this transformers version passes a KV cache (``cache`` since 5.2x, else the old one)."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


class PrefixCache:
    """The KV cache of the prompt beginning that every prompt of an eval shares (its few-shot demonstrations).

    Computed once, by one forward pass over the first batch's shared tokens, and handed to each batch as a copy
    repeated over its rows; when a later batch shares less of it (a batch of one prompt shares all but its last
    token with itself), it is recomputed for what they still share, so it settles on the demonstrations. The result
    equals generating from the whole prompts up to float rounding.
    """

    def __init__(self, model: Any, min_tokens: int = MIN_SHARED_PREFIX) -> None:
        self.model = model
        self.min_tokens = min_tokens
        self.ids: list[int] = []
        self.cache: Any = None
        wanted = "logits_to_keep" in _forward_parameters(model)
        self._kwargs = {"logits_to_keep": 1} if wanted else {}  # only the cache is wanted, not [1, P, V] logits

    def for_batch(self, rows: Sequence[Sequence[int]]) -> tuple[int, Any]:
        """``(P, cache)``: the first P tokens of every row are in ``cache`` (batched over the rows); ``(0, None)``
        when the rows share fewer than ``min_tokens``."""
        shared = shared_prefix_length(rows)
        kept = _common_length(self.ids, rows[0][:shared])
        if self.cache is None or kept < len(self.ids):
            length = kept if kept >= self.min_tokens else shared
            if length < self.min_tokens:
                return 0, None
            self._compute(list(rows[0][:length]))
        batch = copy.deepcopy(self.cache)
        batch.batch_repeat_interleave(len(rows))
        return len(self.ids), batch

    def _compute(self, ids: list[int]) -> None:
        device = getattr(self.model, "device", torch.device("cpu"))
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids], device=device), use_cache=True, **self._kwargs)
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else out.past_key_values
        self.ids = ids


def _continue_after(prefix: int, rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids``/``attention_mask [B, P + S]``: the shared P tokens, then each row's own tokens padded on the left
    (the padding sits between the two; positions come from the mask, so each row's tokens follow the prefix)."""
    tails = [list(r[prefix:]) for r in rows]
    width = max(len(t) for t in tails)
    head = list(rows[0][:prefix])
    ids = [head + [pad] * (width - len(t)) + t for t in tails]
    mask = [[1] * prefix + [0] * (width - len(t)) + [1] * len(t) for t in tails]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def make_generate_fn(
    model: Any,
    tokenizer: Any,
    *,
    max_length: int | None = None,
    stop_strings: Sequence[str] = (),
    add_special_tokens: bool = True,
    reuse_prefix: bool = True,
    round_tokens: int = ROUND_TOKENS,
) -> Callable[[Sequence[str], int], list[Generated]]:
    """A greedy generate function over ``model.generate`` that stops at EOS, the end-of-turn token and
    ``stop_strings`` (transformers' ``stop_strings`` criterion) and cuts the text at the first stop string.

    Prompts are encoded by :func:`segloss.data.encode_prompts` (as in training, left padding, BOS kept; prompts over
    ``max_length`` tokens keep their end). ``generate.n_truncated`` counts the prompts that were cut.
    ``reuse_prefix``: the beginning every prompt shares is computed once (:class:`PrefixCache`), not per prompt.
    ``round_tokens``: a batch generates at most this many tokens at a time; the rows that ended leave it, and the
    others go on from their prompt and what they wrote (a batch otherwise decodes as long as its longest row: one
    answer that never stops kept 7 finished rows busy for 200 steps).
    """
    from segloss.data import encode_prompts, pad_token_id

    if round_tokens < 1:
        raise ValueError(f"round_tokens must be >= 1, got {round_tokens}")
    limit = max_length or 10**9
    stops = [s for s in stop_strings if s]
    end_ids = end_token_ids(tokenizer)
    prefix_cache = PrefixCache(model) if reuse_prefix else None
    pad = pad_token_id(tokenizer)

    def one_round(rows: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], list[bool]]:
        """Each row's new tokens (up to its end or stop string) and whether it ended, after one ``generate``."""
        shared, cache = prefix_cache.for_batch(rows) if prefix_cache is not None else (0, None)
        ids, mask = _continue_after(shared if cache is not None else 0, rows, pad)
        new_tokens = _greedy(model, tokenizer, ids, mask, cache, max_new_tokens, end_ids, stops, pad)
        counts, ended = _counts_and_ends(new_tokens, tokenizer, end_ids, stops, pad)
        return [row[:n] for row, n in zip(new_tokens.tolist(), counts, strict=True)], ended

    def generate(prompts: Sequence[str], max_new_tokens: int) -> list[Generated]:
        encoded = encode_prompts(prompts, tokenizer, limit, add_special_tokens=add_special_tokens)
        generate.n_truncated += encoded.pop("n_truncated")  # type: ignore[attr-defined]
        rows = [ids[m.bool()].tolist() for ids, m in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)]
        written: list[list[int]] = [[] for _ in rows]
        active, budget = list(range(len(rows))), max_new_tokens
        while active and budget > 0:
            step = min(budget, round_tokens)
            tokens, ended = one_round([rows[i] + written[i] for i in active], step)
            for i, new in zip(active, tokens, strict=True):
                written[i] += new
            active = [i for i, done in zip(active, ended, strict=True) if not done]
            budget -= step
        texts = tokenizer.batch_decode(written, skip_special_tokens=True)
        return [Generated(cut_at_stop(t, stops), len(w)) for t, w in zip(texts, written, strict=True)]

    generate.n_truncated = 0  # type: ignore[attr-defined]
    return generate


def _greedy(
    model: Any,
    tokenizer: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    cache: Any,
    max_new_tokens: int,
    end_ids: list[int],
    stops: list[str],
    pad: int,
) -> torch.Tensor:
    """``model.generate`` (greedy) from ``ids``/``mask [B, T]``, continuing ``cache`` when given; the new tokens
    ``[B, <= max_new_tokens]`` (rows that ended are padded)."""
    device = getattr(model, "device", torch.device("cpu"))
    extra: dict[str, Any] = {"stop_strings": stops, "tokenizer": tokenizer} if stops else {}
    if cache is not None:
        extra[_cache_kwarg(model)] = cache
    with torch.no_grad():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,  # the caller's tokenizer is not modified (segloss.data.pad_token_id)
            eos_token_id=end_ids,
            **extra,
        )
    return out[:, ids.shape[1] :]  # left padding aligns the ends


def _counts_and_ends(
    new_tokens: torch.Tensor, tokenizer: Any, end_ids: list[int], stops: list[str], pad: int
) -> tuple[list[int], list[bool]]:
    """Per row of ``new_tokens [B, N]``: how many tokens it wrote (up to the end token, else up to the token that
    completed the first stop string) and whether it ended (``generate`` pads a row once it ended)."""
    rows = new_tokens.tolist()
    counts = count_new_tokens(new_tokens, end_ids, pad)
    ended = [n < len(r) or (n > 0 and r[n - 1] in end_ids) for r, n in zip(rows, counts, strict=True)]
    if not stops:
        return counts, ended
    for row, ids in enumerate(rows):
        text = ""
        for i, token in enumerate(ids[: counts[row]]):
            text += tokenizer.decode([token])
            if any(s in text for s in stops):
                counts[row], ended[row] = i + 1, True
                break
    return counts, ended
