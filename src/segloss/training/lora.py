"""LoRA with `peft`: which modules to adapt (``lora_targets``), checked against the model's linear layers.

``lora_targets`` (a `TrainConfig` field) is one of

* ``attention`` (the default) — the attention projections of the common decoder families (:data:`LORA_TARGETS`);
  other architectures fall back to `peft`'s own per-architecture table and, failing that, to every linear layer
  except the output head;
* ``authors`` — the modules the paper's code adapts (Rege Cambrin et al., EMNLP Findings 2024,
  DarthReca/segmentation-losses-nlp ``improved_loss.py``), per family: Llama and StableLM adapt q/k/v/o, the MLP's
  gate/up/down **and** ``lm_head``; Falcon adapts ``query_key_value``, ``dense`` and both MLP projections; the
  RedPajama-INCITE (GPT-NeoX) models fall to their default, ``query_key_value`` (:data:`AUTHORS_LORA_TARGETS`);
* ``all-linear`` — every linear layer except the output head (what `peft`'s ``"all-linear"`` adapts);
* a list of module names (full names or suffixes, matched as `peft` matches them).

On a model whose ``lm_head`` shares its weight with the input embeddings (``tie_word_embeddings``: SmolLM2, the tiny
test Llama), LoRA on ``lm_head`` adapts the output projection only: the shared base weight stays frozen, so the
embeddings the model reads are unchanged (``tests/training/test_lora.py`` checks it, and that a saved adapter loads
back to the same logits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from torch import nn

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

LoraTargetName = Literal["attention", "authors", "all-linear"]
LORA_TARGET_NAMES: tuple[str, ...] = get_args(LoraTargetName)
#: The parsed ``lora_targets``: one of :data:`LORA_TARGET_NAMES`, or the module names as a tuple.
LoraTargets = str | tuple[str, ...]

# model_type -> module-name suffixes (matched like peft does: the full name or a ".suffix").
LORA_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mixtral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "stablelm": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense"],
    "phi3": ["qkv_proj", "o_proj"],
    "gpt_neox": ["query_key_value", "attention.dense"],
    "falcon": ["query_key_value", "self_attention.dense"],
    "gpt2": ["c_attn", "attn.c_proj"],
}

# improved_loss.py picks its list by substring of the model name: "stablelm"/"llama" → the eight below, "falcon" →
# its four, anything else → ["query_key_value"] (their RedPajama-INCITE runs, GPT-NeoX models). Keyed here by the
# model_type of those models; a family the authors never ran has no list (an error, not a guess).
_AUTHORS_DECODER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
AUTHORS_LORA_TARGETS: dict[str, list[str]] = {
    "llama": _AUTHORS_DECODER,
    "stablelm": _AUTHORS_DECODER,
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "gpt_neox": ["query_key_value"],
}

# Output heads are never adapted by the fallback or by all-linear: a rank-8 update of a V-wide head is rarely wanted.
HEAD_NAMES = ("lm_head", "embed_out", "output")


def parse_lora_targets(value: Any, alias: Any = None) -> LoraTargets:
    """The typed ``lora_targets``: a name of :data:`LORA_TARGET_NAMES`, or a tuple of module names.

    ``alias`` is ``lora_target_modules`` (the older spelling, a list of names); it stands for ``lora_targets`` when
    that is left at ``attention``, and must agree with it otherwise. ``ValueError`` names the field and the fix.
    """
    if alias is not None:
        if not isinstance(alias, (list, tuple)) or not alias or not all(isinstance(n, str) and n for n in alias):
            raise ValueError("lora_target_modules: a non-empty list of module names, or null (see lora_targets)")
        if value not in (None, "attention") and parse_lora_targets(value) != tuple(alias):
            raise ValueError(
                f"lora_targets {value!r} and lora_target_modules {list(alias)} disagree; set only lora_targets "
                "(lora_target_modules is its older spelling)"
            )
        return tuple(alias)
    if value is None:
        return "attention"
    if isinstance(value, str):
        if value not in LORA_TARGET_NAMES:
            raise ValueError(
                f"lora_targets: {value!r} is not one of {list(LORA_TARGET_NAMES)}; or give a list of module names"
            )
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(n, str) and n for n in value):
        return tuple(value)
    raise ValueError(f"lora_targets: one of {list(LORA_TARGET_NAMES)} or a non-empty list of names, got {value!r}")


def linear_layer_names(model: nn.Module) -> list[str]:
    """Full names of the model's linear layers (``nn.Linear`` and GPT-2's ``Conv1D``), in module order."""
    from transformers.pytorch_utils import Conv1D  # here: the report reads lora_targets without transformers

    return [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))]


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def find_lora_targets(model: PreTrainedModel) -> list[str]:
    """The ``attention`` targets of ``model``: the table above, peft's table, or all linear layers but the head."""
    model_type = getattr(model.config, "model_type", "")
    if model_type in LORA_TARGETS:
        return list(LORA_TARGETS[model_type])
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    if model_type in PEFT_TARGETS:
        return list(PEFT_TARGETS[model_type])
    return _all_linear(model)


def _all_linear(model: nn.Module) -> list[str]:
    suffixes = {name.rsplit(".", 1)[-1] for name in linear_layer_names(model)}
    return sorted(s for s in suffixes if s not in HEAD_NAMES)


def resolve_lora_targets(model: PreTrainedModel, targets: LoraTargets | Sequence[str] | None) -> list[str]:
    """Module names to adapt on ``model`` for a ``lora_targets`` value (see the module docstring)."""
    parsed = parse_lora_targets(list(targets) if isinstance(targets, (list, tuple)) else targets)
    if isinstance(parsed, tuple):
        return list(parsed)
    if parsed == "all-linear":
        return _all_linear(model)
    if parsed == "authors":
        model_type = getattr(model.config, "model_type", "")
        if model_type not in AUTHORS_LORA_TARGETS:
            raise ValueError(
                f"lora_targets: authors: the authors' code has target lists for {sorted(AUTHORS_LORA_TARGETS)} "
                f"models, not for model_type {model_type!r}; use attention, all-linear or a list of module names"
            )
        return list(AUTHORS_LORA_TARGETS[model_type])
    return find_lora_targets(model)


def check_lora_targets(model: nn.Module, targets: list[str]) -> None:
    """Raise ``ValueError`` naming the targets that match no linear layer, and listing the layers there are."""
    names = linear_layer_names(model)
    missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ValueError(
            f"lora_targets (lora_target_modules): {missing} match no linear layer of this model; its linear layers "
            f"are named {suffixes} (full names like {names[:3]}); pass some of those with --lora_targets"
        )


def apply_lora(
    model: PreTrainedModel,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    targets: LoraTargets | Sequence[str] | None = None,
) -> PeftModel:
    """Wrap ``model`` in a LoRA ``PeftModel`` (causal LM task); only the adapter weights stay trainable.

    ``targets``: a ``lora_targets`` value (``attention`` when None, ``authors``, ``all-linear``, or module names).
    """
    from peft import LoraConfig, get_peft_model  # imported here: configs parse lora_targets without peft

    names = resolve_lora_targets(model, targets)
    check_lora_targets(model, names)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, bias="none", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)
