"""Fine-tuning with the combined segmentation objective: `TrainConfig`, `train`, `SeglossTrainer`, `load_trained`."""

from segloss.training.config import TrainConfig
from segloss.training.lora import LORA_TARGETS, apply_lora, check_lora_targets, find_lora_targets, linear_layer_names
from segloss.training.train import TrainResult, load_model_and_tokenizer, load_trained, train
from segloss.training.trainer import CombinedLossMixin, SeglossTrainer, exactness_problems

__all__ = [
    "LORA_TARGETS",
    "CombinedLossMixin",
    "SeglossTrainer",
    "TrainConfig",
    "TrainResult",
    "apply_lora",
    "check_lora_targets",
    "exactness_problems",
    "find_lora_targets",
    "linear_layer_names",
    "load_model_and_tokenizer",
    "load_trained",
    "train",
]
