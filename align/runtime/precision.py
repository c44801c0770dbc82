"""Which dtype the trained weights live in, and whether the forward runs under autocast.

Half-precision weights updated by AdamW lose the update: with lr ~1e-6 the change is far below
bf16's resolution (8 bits of mantissa), so most weights never move and a run learns silently less.
Full fine-tuning therefore keeps fp32 master weights and runs forward/backward under bf16 autocast,
as TRL and verl do. Two paths keep half-precision weights on purpose:
  - DeepSpeed: its optimizer keeps fp32 master copies of bf16/fp16 weights itself;
  - LoRA: the half-precision base is frozen, and peft keeps the trainable adapter in fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from align.config import ConfigError


@dataclass(frozen=True)
class Precision:
    weights: str  # dtype the trainable model is loaded in
    autocast: torch.dtype | None  # forward/backward autocast dtype, None = none

    def context(self, device: torch.device):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast)


def training_precision(dtype: str, *, lora: bool, deepspeed: bool) -> Precision:
    """The precision plan for a trainable model whose configured (resolved) dtype is `dtype`."""
    if dtype == "float32" or lora or deepspeed:
        return Precision(weights=dtype, autocast=None)
    if dtype == "float16":
        raise ConfigError(
            "model.dtype=float16 full fine-tuning needs loss scaling, which align does not do outside DeepSpeed; "
            "use model.dtype=bfloat16, lora.enabled=true, or a DeepSpeed launch config"
        )
    return Precision(weights="float32", autocast=getattr(torch, dtype))


def resolve_dtype(name: str) -> str:
    """model.dtype -> a dtype name: auto is bfloat16 on a GPU, float32 on CPU."""
    if name != "auto":
        return name
    return "bfloat16" if torch.cuda.is_available() else "float32"
