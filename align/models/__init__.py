"""Model and tokenizer loading, LoRA, and the built-in tiny model."""

from align.models.loading import (
    DEFAULT_CACHE_DIR,
    ModelLoadError,
    check_vocabulary,
    load_model,
    load_tokenizer,
    model_context,
    resolve_model_path,
)
from align.models.lm_head import chunkable_lm_head
from align.models.lora import apply_lora, is_peft_model, merged_named_tensors
from align.models.reference import mix_into_reference
from align.models.tiny import PRESETS, build_tokenizer, tiny_model_path, write_tiny_model

__all__ = [
    "DEFAULT_CACHE_DIR",
    "ModelLoadError",
    "PRESETS",
    "apply_lora",
    "build_tokenizer",
    "check_vocabulary",
    "chunkable_lm_head",
    "is_peft_model",
    "load_model",
    "load_tokenizer",
    "merged_named_tensors",
    "mix_into_reference",
    "model_context",
    "resolve_model_path",
    "tiny_model_path",
    "write_tiny_model",
]
