"""The policy-gradient loss shared by GRPO, GCPO and SALT (ALGORITHMS.md sections 1 and 6): a
registered per-token surrogate (surrogates.py) plus the KL term, aggregated over the mask."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from align.algos._checks import check_positive, check_same_shape
from align.algos.aggregate import AggMode, aggregate, masked_mean
from align.algos.kl import LOG_RATIO_LIMIT, KLKind, kl_estimate
from align.algos.surrogates import SURROGATES, RatioLevel, clipped_pg_token_loss

__all__ = ["clipped_pg_token_loss", "grpo_loss", "logprob_mismatch_metrics", "off_policy_terms", "tis_weights"]


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


def off_policy_terms(
    correction: str, current_logp: torch.Tensor, behaviour_logp: torch.Tensor, cap: float | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pi_old, per-token weight) for samples drawn from a behaviour policy mu that may be some
    weight versions older than the current policy (ALGORITHMS.md section 9).

    current_logp: [B,T] log-probs of the sampled tokens under the weights the step starts from
    (the "proximal" policy); behaviour_logp: [B,T] the engine's log-probs of the same tokens, as
    sampled. The ratio of the surrogate is pi_theta / pi_old; the weight multiplies the per-token loss.

    - decoupled (AReaL's decoupled PPO, arXiv 2505.24298): pi_old = the current policy, so the clip
      trusts the region around the weights being updated; the staleness is corrected by the detached
      weight min(pi_current / mu, cap). It is the engine-mismatch TIS weight of a synchronous run.
    - bypass (verl's and TRL AsyncGRPO's default): pi_old = mu itself, no weight; the clip then
      bounds pi_theta / mu, and a sample whose ratio is already outside [1-eps, 1+eps] is clipped.

    A token the engine could not score (NaN) falls back to the current policy (ratio 1, weight 1).
    """
    check_same_shape("behaviour_logp", behaviour_logp, "current_logp", current_logp)
    current = current_logp.detach()
    if correction == "decoupled":
        return current, None if cap is None else tis_weights(current, behaviour_logp, cap)
    if correction == "bypass":
        behaviour = behaviour_logp.detach()
        return torch.where(torch.isnan(behaviour), current, behaviour), None
    raise ValueError(f"off-policy correction {correction!r}: choose decoupled or bypass")


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
    surrogate: str = "clip",
    surrogate_options: Mapping[str, float] | None = None,
    is_weights: torch.Tensor | None = None,
    pg_mask: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    entropy_tokens: float | None = None,
    agg: AggMode = "seq_mean_token_mean",
    const_len: int | None = None,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss: aggregate(surrogate + beta * KL) over the mask. All token tensors [B,T].

    surrogate: a name in SURROGATES (default "clip", PPO's clipped ratio). It receives the options
    its entry `reads`: the clip, delta, dual-clip and ratio-level arguments here, and its own
    (e.g. cispo_cap) from `surrogate_options`.
    pg_mask [B,T] (0/1): tokens whose policy-gradient term counts (top_entropy_quantile keeps the
    high-entropy ones); the KL term and the normaliser still run over `mask`, as in TRL.
    entropy [B,T] (with grad) and entropy_coef > 0: subtract entropy_coef * the mean entropy over the
    tokens of mask * pg_mask; `entropy_tokens` is their global count (the step's, so the bonus too is an
    additive share; None = this call's count).

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
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate={surrogate!r} is not registered; registered: {', '.join(sorted(SURROGATES))}")
    entry = SURROGATES[surrogate]
    given = dict(eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip, delta=delta, ratio_level=ratio_level)
    unread = sorted(set(surrogate_options or {}) - set(entry.reads))
    if unread:
        raise ValueError(f"surrogate={surrogate!r} does not read {', '.join(unread)}; it reads {', '.join(entry.reads)}")
    given |= dict(surrogate_options or {})
    options = {name: given[name] for name in entry.reads if name in given}
    pg_tok, info = entry.fn(logp, old_logp, adv_tok, mask=mask, is_weights=is_weights, **options)
    if pg_mask is not None:
        check_same_shape("pg_mask", pg_mask, "logp", logp)
        pg_tok = pg_tok * pg_mask.detach()
    no_flag = torch.zeros_like(logp, dtype=torch.bool)  # a surrogate without a clip reports none
    agg_args = dict(mode=agg, const_len=const_len, num_tokens=num_tokens, num_seqs=num_seqs)
    loss_tok = pg_tok
    kl_mean = logp.new_zeros((), dtype=torch.float32)
    if beta > 0:
        kl_tok = kl_estimate(logp, ref_logp, kind=kl_kind, clamp=kl_clamp)
        loss_tok = pg_tok + beta * kl_tok
        kl_mean = masked_mean(kl_tok.detach(), mask)
    loss = aggregate(loss_tok, mask, **agg_args)
    entropy_mean = logp.new_zeros((), dtype=torch.float32)
    if entropy_coef:
        if entropy is None:
            raise ValueError(f"entropy_coef={entropy_coef} needs entropy [B,T] (with grad) of the same tokens")
        check_same_shape("entropy", entropy, "logp", logp)
        kept = mask if pg_mask is None else mask * pg_mask
        bonus = aggregate(entropy, kept, mode="token_mean", num_tokens=entropy_tokens)
        loss = loss - entropy_coef * bonus
        entropy_mean = bonus.detach()
    with torch.no_grad():
        metrics = {
            "pg_loss": aggregate(pg_tok.detach(), mask, **agg_args),
            "kl": kl_mean,
            "clip_frac_low": masked_mean(info.get("clipped_low", no_flag).float(), mask),
            "clip_frac_high": masked_mean(info.get("clipped_high", no_flag).float(), mask),
            "dual_clip_frac": masked_mean(info.get("dual_clipped", no_flag).float(), mask),
            "ratio_mean": masked_mean(info["ratio"], mask),
            "num_tokens": mask.bool().sum().float(),
        }
        if entropy_coef:
            metrics["entropy_bonus"] = entropy_mean
    return loss, metrics
