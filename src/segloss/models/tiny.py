"""A small BPE tokenizer trained with `tokenizers` and a tiny Llama-architecture causal LM.

Both are saved with ``save_pretrained`` so that everything downstream goes through the real loading path
(``AutoTokenizer.from_pretrained`` / ``AutoModelForCausalLM.from_pretrained``), exactly as a hub model would.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, *, with_pad: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level BPE with one token per digit (arithmetic stays learnable) that prepends BOS like Llama.

    ``with_pad=False`` mimics Llama-style tokenizers that ship without a pad token.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # its bars write to the terminal directly, past any redirection
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>" if with_pad else None,
    )


def train_sentencepiece_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A Llama-style (sentencepiece) BPE: ``▁`` marks a word start (prepended to the first word too), byte fallback
    for unknown characters, BOS prepended, no pad token. Built locally so tests need no download."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_llama_config(
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 512,
    special_ids: PreTrainedTokenizerFast | None = None,
) -> LlamaConfig:
    """The tiny Llama's config (MLP 2× hidden, half as many KV heads, tied head); bos/eos/pad from ``special_ids``."""
    ids = (
        {f"{n}_token_id": getattr(special_ids, f"{n}_token_id") for n in ("bos", "eos", "pad")} if special_ids else {}
    )
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        **ids,
    )


def build_tiny_llama(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama with the tokenizer's vocabulary (seeded, so tests are reproducible)."""
    config = tiny_llama_config(
        len(tokenizer),
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        max_positions=max_positions,
        special_ids=tokenizer,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def make_tiny_model_dir(
    path: str | Path,
    texts: Iterable[str],
    *,
    vocab_size: int = 512,
    with_pad: bool = False,
    seed: int = 0,
    **model_kwargs: int,
) -> Path:
    """Train a tokenizer on ``texts``, build a tiny Llama and ``save_pretrained`` both into ``path``."""
    path = Path(path)
    tokenizer = train_tokenizer(texts, vocab_size, with_pad=with_pad)
    model = build_tiny_llama(tokenizer, seed=seed, **model_kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
