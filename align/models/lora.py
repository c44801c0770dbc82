"""LoRA through peft, and the merged view of a LoRA model that the rollout engine is synced to."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def apply_lora(
    model,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: Sequence[str] | str = "all-linear",
    autocast_adapter_dtype: bool = True,
):
    """Wrap `model` in a peft LoRA adapter; only the adapter weights stay trainable.

    autocast_adapter_dtype: peft's default upcasts bf16/fp16 adapters to float32. Pass False under
    DeepSpeed: its bf16 engine expects every trainable parameter in bf16 (it keeps the fp32 master
    copy itself) and fails on the first optimizer step otherwise.
    """
    from peft import LoraConfig, get_peft_model

    if not isinstance(target_modules, str):
        target_modules = list(target_modules)
        if target_modules == ["all-linear"]:  # peft's shorthand is only recognised as a plain string
            target_modules = "all-linear"
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config, autocast_adapter_dtype=autocast_adapter_dtype)


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def checkpoint_name(name: str) -> str:
    """A peft parameter name as the plain checkpoint names it (what rollout engines load)."""
    # peft names look like base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


@torch.no_grad()
def merged_named_tensors(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of the full model as a plain checkpoint would name them.

    For a peft model the adapter is merged for the read and unmerged afterwards, so the trainer's
    parameters are unchanged. Tied weights are included under every name (state_dict, not
    named_parameters: the latter omits a tied lm_head, which silently breaks the engine's copy).
    """
    if is_peft_model(model):
        model.merge_adapter()
        try:
            for name, tensor in model.state_dict().items():
                if "lora_" in name or "modules_to_save" in name:
                    continue
                # Merged layers change back in place on unmerge: copy those (and only those), so a
                # caller that keeps the tensors still sees the merged values.
                yield checkpoint_name(name), tensor.detach().clone() if ".base_layer." in name else tensor.detach()
        finally:
            model.unmerge_adapter()
    else:
        for name, tensor in model.state_dict().items():
            yield name, tensor.detach()
