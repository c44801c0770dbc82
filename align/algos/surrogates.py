"""Policy-gradient surrogates: the per-token objective whose gradient is the policy gradient.

A surrogate is one function and one line in `SURROGATES`; `loss.surrogate=NAME` picks it, GRPO,
GCPO and SALT train with it through `grpo_loss`, and `python -m align explain` prints its summary.
Every surrogate takes the same arguments:

    fn(logp [B,T] (grad), old_logp [B,T], adv_tok [B] or [B,T], *, eps_low, eps_high, dual_clip,
       delta, ratio_level, mask [B,T], is_weights [B,T] | None) -> (loss_tok [B,T], info)

info holds detached [B,T] tensors: "ratio" (required, pi / pi_old), and where the surrogate clips,
boolean "clipped_low", "clipped_high", "dual_clipped" (logged as clip fractions; absent = none).
Padding is not masked here: `aggregate` does that. CONTRIBUTING.md "Adding a loss option" adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from align.algos._checks import check_choice, check_ndim, check_positive, check_same_shape
from align.algos.kl import LOG_RATIO_LIMIT

RatioLevel = Literal["token", "sequence"]


def _token_advantages(adv_tok: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Advantages as [B,T] or [B,1] (broadcastable to logp), detached."""
    if adv_tok.dim() == 1 and adv_tok.shape[0] == logp.shape[0]:
        return adv_tok.detach().unsqueeze(-1)
    if adv_tok.shape == logp.shape:
        return adv_tok.detach()
    raise ValueError(
        f"adv_tok has shape {tuple(adv_tok.shape)} but logp is {tuple(logp.shape)}; pass [B] (one advantage per "
        "sequence) or [B,T] (per token)"
    )


def clipped_pg_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv_tok: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    delta: float | None = None,
    ratio_level: RatioLevel = "token",
    mask: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate per token: l = max(-A*rho, -A*clip(rho, 1-eps_low, 1+eps_high)).

    logp [B,T] (grad), old_logp [B,T] (constant), adv_tok [B] or [B,T] (constant).
    eps_high > eps_low is DAPO's clip-higher. delta caps the unclipped ratio (TRL two-sided clip).
    dual_clip = c > 1 bounds the loss of A < 0 tokens at -A*c (verl clip_ratio_c).
    ratio_level "sequence" (GSPO) uses rho_i = exp(mean over mask tokens of the log-ratio) for every
    token of sequence i; it needs `mask` [B,T]. is_weights [B,T] (e.g. `tis_weights`) multiply the
    per-token loss as constants. The log-ratio is clamped to +-20 before exp.
    Returns (loss_tok [B,T], info) with info tensors [B,T], detached: ratio, clipped_low (A<0 and
    rho < 1-eps_low), clipped_high (A>0 and rho > 1+eps_high), dual_clipped. Padding is not masked here:
    `aggregate` does that.
    """
    check_ndim("logp", logp, 2, "[B,T]")
    check_same_shape("old_logp", old_logp, "logp", logp)
    check_choice("ratio_level", ratio_level, ("token", "sequence"))
    check_positive("eps_low", eps_low, allow_zero=True)
    check_positive("eps_high", eps_high, allow_zero=True)
    if eps_low >= 1:
        raise ValueError(f"eps_low={eps_low} must be < 1 (the lower clip bound is 1 - eps_low)")
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip={dual_clip} must be > 1 (it bounds the loss of negative advantages at -A*c)")
    if delta is not None and delta <= 1 + eps_high:
        raise ValueError(f"delta={delta} must be > 1 + eps_high = {1 + eps_high} (it caps the unclipped ratio)")
    adv = _token_advantages(adv_tok, logp)

    log_ratio = (logp - old_logp.detach()).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    if ratio_level == "sequence":
        if mask is None:
            raise ValueError("ratio_level='sequence' needs mask [B,T] to average the log-ratio over each sequence")
        check_same_shape("mask", mask, "logp", logp)
        keep = mask.bool()
        seq_log_ratio = torch.where(keep, log_ratio, 0.0).sum(-1) / keep.sum(-1).clamp(min=1)
        log_ratio = seq_log_ratio.unsqueeze(-1).expand_as(logp)
    ratio = torch.exp(log_ratio)

    unclipped = ratio if delta is None else ratio.clamp(max=delta)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    loss_tok = torch.maximum(-adv * unclipped, -adv * clipped)
    negative = adv < 0
    dual_clipped = torch.zeros_like(logp, dtype=torch.bool)
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual_clipped = negative & (loss_tok.detach() > bound)
        loss_tok = torch.where(negative, torch.minimum(loss_tok, bound), loss_tok)
    if is_weights is not None:
        check_same_shape("is_weights", is_weights, "logp", logp)
        loss_tok = loss_tok * is_weights.detach()

    ratio_d = ratio.detach()
    info = {
        "ratio": ratio_d,
        "clipped_low": negative & (ratio_d < 1 - eps_low),
        "clipped_high": (adv > 0) & (ratio_d > 1 + eps_high),
        "dual_clipped": dual_clipped.expand_as(logp),
    }
    return loss_tok, info


@dataclass(frozen=True)
class Surrogate:
    fn: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    summary: str  # one line for `explain`; {low}, {high} (the clip bounds) and any loss.* key are filled in


SURROGATES: dict[str, Surrogate] = {
    "clip": Surrogate(clipped_pg_token_loss, "PPO clipped surrogate, ratio clipped to [{low:g}, {high:g}] "
                                             "({ratio_level}-level ratio)"),
}
