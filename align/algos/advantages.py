"""Outcome advantages over the G completions of each prompt (ALGORITHMS.md sections 1 and 6)."""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from align.algos._checks import as_valid, check_choice, check_ndim, check_positive

Baseline = Literal["mean", "loo", "none"]
Scale = Literal["std", "batch", "none"]
SmallGroup = Literal["zero", "raw"]


def _output_dtype(rewards: torch.Tensor) -> torch.dtype:
    # Statistics run in float64 so float32 rewards lose nothing; float64 callers (reference vectors)
    # get float64 back, everyone else the float32 the losses expect.
    return torch.float64 if rewards.dtype == torch.float64 else torch.float32


def check_rewards(rewards: torch.Tensor, valid: torch.Tensor) -> None:
    """Raise ValueError if a reward marked valid is NaN or infinite (an unscorable member must be valid=False)."""
    bad = valid & ~torch.isfinite(rewards)
    if bad.any():
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"rewards has {int(bad.sum())} non-finite value(s) at valid positions (first at {where}); "
            "mark unscorable completions valid=False"
        )


def _divide_or_zero(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    # With eps = 0 a zero-spread group would give 0/0; its advantage is 0, never NaN.
    return torch.where(denominator > 0, numerator / denominator, 0.0)


@torch.no_grad()
def group_advantages(
    rewards: torch.Tensor,
    valid: torch.Tensor | None = None,
    baseline: Baseline = "mean",
    scale: Scale = "std",
    ddof: int = 1,
    eps: float = 1e-6,
    small_group: SmallGroup = "zero",
) -> torch.Tensor:
    """Group-relative advantage A[p,i] = (r[p,i] - baseline[p,i]) / (scale + eps).

    rewards: [P,G] float; valid: [P,G] bool or None (all valid). Invalid members get A = 0 and are
    left out of every statistic (their reward may be NaN).
    baseline: "mean" = group mean (GRPO), "loo" = mean of the OTHER valid members (RLOO),
    "none" = 0. scale: "std" = group std with `ddof` (GRPO), "batch" = std over every valid reward
    of the batch, "none" = no division (Dr.GRPO; eps is then not added either).
    small_group: a group with fewer than 2 valid members has nothing to compare against; "zero"
    gives it A = 0 and warns, "raw" gives A = r (verl's mean 0 / std 1 convention).
    A group whose valid rewards are all equal gets A = 0 exactly (with a "mean" or "loo" baseline).
    Returns [P,G], float32 (float64 when rewards are float64). No gradient flows.
    """
    check_ndim("rewards", rewards, 2, "[P,G]")
    check_choice("baseline", baseline, ("mean", "loo", "none"))
    check_choice("scale", scale, ("std", "batch", "none"))
    check_choice("small_group", small_group, ("zero", "raw"))
    if not isinstance(ddof, int) or ddof < 0:
        raise ValueError(f"ddof={ddof!r} must be a non-negative int (1 = Bessel-corrected std, 0 = population std)")
    check_positive("eps", eps, allow_zero=True)
    valid = as_valid(valid, rewards, "rewards")
    check_rewards(rewards, valid)

    r = torch.where(valid, rewards.detach().to(torch.float64), 0.0)
    weight = valid.to(torch.float64)
    count = weight.sum(1, keepdim=True)  # [P,1]
    total = r.sum(1, keepdim=True)
    mean = total / count.clamp(min=1)

    if baseline == "mean":
        centred = r - mean
    elif baseline == "loo":
        centred = r - (total - r) / (count - 1).clamp(min=1)
    else:
        centred = r.clone()
    if baseline != "none":
        # r - sum/n is not exactly 0 in floating point (0.1*3/3 != 0.1); equal rewards must give 0.
        high = torch.where(valid, r, -torch.inf).amax(1, keepdim=True)
        low = torch.where(valid, r, torch.inf).amin(1, keepdim=True)
        centred = torch.where(high == low, 0.0, centred)

    if scale == "std":
        var = ((r - mean) ** 2 * weight).sum(1, keepdim=True) / (count - ddof).clamp(min=1)
        adv = _divide_or_zero(centred, var.sqrt() + eps)
    elif scale == "batch":
        n_all = weight.sum()
        mean_all = r.sum() / n_all.clamp(min=1)
        var = ((r - mean_all) ** 2 * weight).sum() / (n_all - ddof).clamp(min=1)
        adv = _divide_or_zero(centred, var.sqrt() + eps)
    else:
        adv = centred

    singletons = count == 1
    if singletons.any():
        if small_group == "zero":
            warnings.warn(
                f"{int(singletons.sum())} prompt group(s) have a single valid completion: their advantage is 0 "
                "(use G >= 2, or small_group='raw' for A = r)",
                stacklevel=2,
            )
            adv = torch.where(singletons, 0.0, adv)
        else:
            adv = torch.where(singletons, r, adv)
    adv = torch.where(valid, adv, 0.0)
    return adv.to(_output_dtype(rewards))
