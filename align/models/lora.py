"""LoRA through peft, and the merged view of a LoRA model that the rollout engine is synced to."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from align.models.errors import ModelLoadError


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
    if not isinstance(target_modules, str):  # a plain string other than all-linear is a peft regex
        _check_target_modules(model, target_modules)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config, autocast_adapter_dtype=autocast_adapter_dtype)


def _check_target_modules(model, targets: list[str]) -> None:
    # peft reports a missing module with a multi-line traceback deep in its tuner; name it and the choices here.
    names = {name for name, _ in model.named_modules()}
    suffixes = {name.rsplit(".", 1)[-1] for name in names}
    missing = [t for t in targets if t not in suffixes and t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ModelLoadError(
            f"lora.target_modules: {missing} not found in the model; its linear layers are {linear}; "
            f"set lora.target_modules=[...] to some of them, or [all-linear]"
        )


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


def _lora_layer_types() -> tuple[type, ...]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return ()
    return (LoraLayer,)


def sync_units(model) -> Iterator[tuple[str, torch.nn.Module, bool]]:
    """(name, module, is_lora) units in state_dict order: a LoRA layer with its adapter as one unit
    (its merged weight needs both), otherwise each module with its own direct parameters."""
    lora_types = _lora_layer_types()
    inside_lora: tuple[str, ...] = ()
    for name, module in model.named_modules():
        if inside_lora and name.startswith(inside_lora):
            continue
        if lora_types and isinstance(module, lora_types):
            inside_lora = (name + ".",)
            yield name, module, True
        elif any(True for _ in module.parameters(recurse=False)) or module._buffers:
            yield name, module, False


def _persistent_buffers(prefix: str, module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for key, buf in module._buffers.items():
        if buf is not None and key not in module._non_persistent_buffers_set:
            yield f"{prefix}{key}", buf


def unit_tensors(name: str, module: torch.nn.Module, is_lora: bool, copy: bool = False
                 ) -> Iterator[tuple[str, torch.Tensor]]:
    """The unit's checkpoint-named tensors. A LoRA layer yields a NEW tensor base weight + delta:
    peft's merge/unmerge works in place, and (W + D) - D != W in half precision, so every sync
    would move the frozen base weights a little. `copy` also copies the plain tensors."""
    prefix = f"{name}." if name else ""
    if is_lora:
        base = module.get_base_layer()
        weight = base.weight.detach().clone()
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                weight += module.get_delta_weight(adapter).to(weight.dtype)
        yield checkpoint_name(f"{prefix}base_layer.weight"), weight
        if getattr(base, "bias", None) is not None:
            bias = base.bias.detach()
            yield checkpoint_name(f"{prefix}base_layer.bias"), bias.clone() if copy else bias
        return
    tensors = [(prefix + key, p) for key, p in module._parameters.items() if p is not None]
    for key, tensor in [*tensors, *_persistent_buffers(prefix, module)]:
        tensor = tensor.detach()
        yield checkpoint_name(key), tensor.clone() if copy else tensor


@torch.no_grad()
def merged_named_tensors(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of the full model as a plain checkpoint would name them.

    For a peft model each LoRA layer yields base + delta as a new tensor; the trainer's parameters
    are never written (not even merged and unmerged). Tied weights are included under every name
    (state_dict order and names: a tied lm_head left out silently breaks the engine's copy).
    """
    if not is_peft_model(model):
        for name, tensor in model.state_dict().items():
            yield name, tensor.detach()
        return
    seen = set()
    for name, module, is_lora in sync_units(model):
        for tensor_name, tensor in unit_tensors(name, module, is_lora):
            seen.add(tensor_name)
            yield tensor_name, tensor
    # Tied weights (a tied lm_head) are one parameter under two state_dict names: add the others.
    for name, tensor in model.state_dict().items():
        plain = checkpoint_name(name)
        if plain not in seen and "lora_" not in name and "modules_to_save" not in name:
            yield plain, tensor.detach()
