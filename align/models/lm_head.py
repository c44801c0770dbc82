"""Which models may have their LM head applied chunk by chunk (train.lm_head_chunk).

The chunked head (align/algos/logprobs.py, `token_logprobs_from_hidden`) multiplies the final hidden
states by the head's weight itself, so it is exact only where the model's logits ARE that product:
a bias-free `nn.Linear` head with nothing after it. Architectures that scale or soft-cap their logits
(Gemma 2's final_logit_softcapping, Cohere's logit_scale, Granite's logits_scaling) would silently
train on other log-probs, so only the families checked here qualify; others use the whole head.
"""

from __future__ import annotations

import torch

from align.models.lora import is_peft_model

# model_type values whose CausalLM forward is `logits = lm_head(norm(hidden))` with no bias, scale or cap.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})


def chunkable_lm_head(model) -> torch.nn.Linear | None:
    """The LM head of `model` (unwrapped from accelerate; a peft model is looked through) if the
    chunked head is exact for it, else None (the trainer then computes the logits whole)."""
    base = model.get_base_model() if is_peft_model(model) else model
    config = getattr(base, "config", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    if type(head) is not torch.nn.Linear or head.bias is not None:  # e.g. a LoRA-wrapped head
        return None
    if hasattr(head.weight, "ds_id"):  # ZeRO-3 partitions it: only the module's own forward gathers it
        return None
    return head
