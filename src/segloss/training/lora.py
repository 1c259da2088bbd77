"""LoRA with `peft`: target modules found from the architecture, checked against the model's linear layers.

The table adapts the attention projections of the common decoder families. Other architectures fall back to
`peft`'s own per-architecture table and, failing that, to every linear layer except the output head.
"""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

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

# Output heads are never adapted by the fallback: a rank-8 update of a V-wide head is rarely wanted.
HEAD_NAMES = ("lm_head", "embed_out", "output")


def linear_layer_names(model: nn.Module) -> list[str]:
    """Full names of the model's linear layers (``nn.Linear`` and GPT-2's ``Conv1D``), in module order."""
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))]


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def find_lora_targets(model: PreTrainedModel) -> list[str]:
    """Module names to adapt for ``model``: the table above, peft's table, or all linear layers but the head."""
    model_type = getattr(model.config, "model_type", "")
    if model_type in LORA_TARGETS:
        return list(LORA_TARGETS[model_type])
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    if model_type in PEFT_TARGETS:
        return list(PEFT_TARGETS[model_type])
    suffixes = {name.rsplit(".", 1)[-1] for name in linear_layer_names(model)}
    return sorted(s for s in suffixes if s not in HEAD_NAMES)


def check_lora_targets(model: nn.Module, targets: list[str]) -> None:
    """Raise ``ValueError`` naming the targets that match no linear layer, and listing the layers there are."""
    names = linear_layer_names(model)
    missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ValueError(
            f"lora_target_modules: {missing} match no linear layer of this model; its linear layers are named "
            f"{suffixes} (full names like {names[:3]}); pass some of those with --lora-target-modules"
        )


def apply_lora(
    model: PreTrainedModel, *, r: int = 8, alpha: int = 16, dropout: float = 0.05, targets: list[str] | None = None
) -> PeftModel:
    """Wrap ``model`` in a LoRA ``PeftModel`` (causal LM task); only the adapter weights stay trainable."""
    targets = list(targets) if targets else find_lora_targets(model)
    check_lora_targets(model, targets)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)
