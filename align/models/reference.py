"""A moving reference model (TR-DPO, arXiv 2404.09656: "Learn Your Reference Model for Real Good Alignment").

A frozen reference anchors the KL term to the starting policy for the whole run; TR-DPO's soft
update lets it follow the policy: every tau steps, ref <- alpha * policy + (1 - alpha) * ref. That
keeps the KL term a trust region around recent policies instead of a leash to the first one.
"""

from __future__ import annotations

import torch

from align.models.lora import merged_named_tensors


@torch.no_grad()
def mix_into_reference(reference: torch.nn.Module, policy: torch.nn.Module, alpha: float) -> None:
    """ref <- alpha * policy + (1 - alpha) * ref, in place, parameter by parameter.

    `policy` may be a peft model: its LoRA layers count as base + delta (`merged_named_tensors`), and
    the reference is the plain model. Tied weights are one parameter of the reference and are mixed
    once. A reference parameter with no counterpart in the policy is an error, not a silent skip.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in (0, 1] (the policy's share of the new reference)")
    targets = dict(reference.named_parameters())
    mixed: set[str] = set()
    for name, tensor in merged_named_tensors(policy):
        param = targets.get(name)
        if param is None or name in mixed:  # a tied weight's second name, or a buffer
            continue
        if param.shape != tensor.shape:
            raise ValueError(f"reference parameter {name} is {tuple(param.shape)} but the policy's is {tuple(tensor.shape)}")
        param.lerp_(tensor.to(device=param.device, dtype=param.dtype), alpha)
        mixed.add(name)
    missing = sorted(set(targets) - mixed)
    if missing:
        raise ValueError(f"the policy has no tensor for reference parameter(s) {', '.join(missing[:3])}"
                         + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
