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
):
    """Wrap `model` in a peft LoRA adapter; only the adapter weights stay trainable."""
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
    return get_peft_model(model, config)


def _check_target_modules(model, targets: list[str]) -> None:
    # peft reports a missing module with a multi-line traceback deep in its tuner; name it and the choices here.
    from align.models.loading import ModelLoadError

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
