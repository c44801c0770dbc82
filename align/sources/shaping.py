"""Reward shaping the loop applies before advantages: DAPO's overlong penalty and group filtering."""

from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, max_tokens: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO soft overlong punishment: 0 up to max_tokens - buffer, then linear down to -factor.

    lengths: [...] completion lengths in tokens. Returns a penalty of the same shape (<= 0).
    """
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    over = (lengths.float() - (max_tokens - buffer)).clamp(min=0)
    return -factor * (over / buffer).clamp(max=1.0)


def informative_groups(rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[P] bool: groups whose valid rewards are not all equal (DAPO dynamic sampling keeps these)."""
    big = torch.finfo(rewards.dtype).max
    hi = torch.where(valid, rewards, torch.full_like(rewards, -big)).amax(-1)
    lo = torch.where(valid, rewards, torch.full_like(rewards, big)).amin(-1)
    return (hi > lo) & (valid.sum(-1) > 1)
