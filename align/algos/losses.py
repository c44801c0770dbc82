"""The clipped policy-gradient loss shared by GRPO, GCPO and SALT (ALGORITHMS.md sections 1 and 6)."""

from __future__ import annotations

from typing import Literal

import torch

from align.algos._checks import check_choice, check_ndim, check_positive, check_same_shape
from align.algos.aggregate import AggMode, aggregate, masked_mean
from align.algos.kl import LOG_RATIO_LIMIT, KLKind, kl_estimate

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


def tis_weights(old_logp: torch.Tensor, engine_logp: torch.Tensor, cap: float = 2.0) -> torch.Tensor:
    """Truncated importance-sampling weights for the engine-vs-trainer mismatch: min(pi_trainer/pi_engine, cap).

    old_logp: [B,T] the trainer's log-probs of the sampled tokens under the sampling weights;
    engine_logp: [B,T] the rollout engine's log-probs of the same tokens. Returns [B,T], detached,
    to multiply the per-token policy loss. A token the engine could not score (NaN) gets weight 1.
    """
    check_same_shape("engine_logp", engine_logp, "old_logp", old_logp)
    check_positive("cap", cap)
    log_ratio = (old_logp.detach() - engine_logp.detach()).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    weights = torch.exp(log_ratio).clamp(max=cap)
    return torch.where(torch.isnan(weights), torch.ones_like(weights), weights)


@torch.no_grad()
def logprob_mismatch_metrics(
    old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor, cap: float = 2.0
) -> dict[str, torch.Tensor]:
    """How far the engine's log-probs are from the trainer's, over mask tokens: [B,T] each -> scalars.

    abs_diff_mean / abs_diff_max: |old_logp - engine_logp|; kl_k3: k3 estimate of KL(engine || trainer);
    tis_capped_frac: share of tokens whose TIS weight hit `cap`.
    """
    check_same_shape("engine_logp", engine_logp, "old_logp", old_logp)
    check_same_shape("mask", mask, "old_logp", old_logp)
    keep = mask.bool() & torch.isfinite(engine_logp)
    diff = (old_logp - engine_logp).abs()
    kl = kl_estimate(engine_logp, old_logp, kind="k3", clamp=None)
    ratio = torch.exp((old_logp - engine_logp).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    return {
        "abs_diff_mean": masked_mean(diff, keep),
        "abs_diff_max": torch.where(keep, diff, 0.0).amax() if diff.numel() else diff.new_zeros(()),
        "kl_k3": masked_mean(kl, keep),
        "tis_capped_frac": masked_mean((ratio >= cap).to(diff), keep),
    }


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


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv_tok: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    kl_kind: KLKind = "k3",
    kl_clamp: float | None = 10.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    delta: float | None = None,
    ratio_level: RatioLevel = "token",
    is_weights: torch.Tensor | None = None,
    agg: AggMode = "seq_mean_token_mean",
    const_len: int | None = None,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss: aggregate(clipped surrogate + beta * KL) over the mask. All token tensors [B,T].

    adv_tok: [B] or [B,T]. ref_logp is required when beta > 0. num_tokens / num_seqs are the global
    counts of the optimizer step (see `aggregate`); the returned loss is then this shard's share.
    Metrics (0-d, detached): pg_loss (the surrogate part, aggregated like the loss), kl (mean over
    this shard's mask tokens; 0 when beta = 0 or no ref), clip_frac_low, clip_frac_high,
    dual_clip_frac, ratio_mean (means over this shard's mask tokens), num_tokens (this shard's count).
    """
    check_same_shape("mask", mask, "logp", logp)
    check_positive("beta", beta, allow_zero=True)
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp (the reference model's log-probs); pass it or set beta=0")
    pg_tok, info = clipped_pg_token_loss(
        logp, old_logp, adv_tok, eps_low, eps_high, dual_clip, delta, ratio_level, mask, is_weights
    )
    agg_args = dict(mode=agg, const_len=const_len, num_tokens=num_tokens, num_seqs=num_seqs)
    loss_tok = pg_tok
    kl_mean = logp.new_zeros((), dtype=torch.float32)
    if beta > 0:
        kl_tok = kl_estimate(logp, ref_logp, kind=kl_kind, clamp=kl_clamp)
        loss_tok = pg_tok + beta * kl_tok
        kl_mean = masked_mean(kl_tok.detach(), mask)
    loss = aggregate(loss_tok, mask, **agg_args)
    with torch.no_grad():
        metrics = {
            "pg_loss": aggregate(pg_tok.detach(), mask, **agg_args),
            "kl": kl_mean,
            "clip_frac_low": masked_mean(info["clipped_low"].float(), mask),
            "clip_frac_high": masked_mean(info["clipped_high"].float(), mask),
            "dual_clip_frac": masked_mean(info["dual_clipped"].float(), mask),
            "ratio_mean": masked_mean(info["ratio"], mask),
            "num_tokens": mask.bool().sum().float(),
        }
    return loss, metrics
