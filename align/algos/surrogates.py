"""Policy-gradient surrogates: the per-token objective whose gradient is the policy gradient.

A surrogate is one function and one line in `SURROGATES`; `loss.surrogate=NAME` picks it, GRPO,
GCPO and SALT train with it through `grpo_loss`, and `python -m align explain` prints its summary.
Every surrogate takes

    fn(logp [B,T] (grad), old_logp [B,T], adv_tok [B] or [B,T], *, mask [B,T], is_weights [B,T] | None,
       **options) -> (loss_tok [B,T], info)

where `options` are the `loss.*` keys the entry's `reads` names (the clip bounds, ratio level,
its own temperatures...): `grpo_loss` passes exactly those, so a key a surrogate does not read can
be reported as inert. info holds detached [B,T] tensors: "ratio" (required, pi / pi_old), and where
the surrogate clips, boolean "clipped_low", "clipped_high", "dual_clipped" (logged as clip
fractions; absent = none). Padding is not masked here: `aggregate` does that.

The four beyond PPO's clip are TRL 1.16's loss types of the same names (parity in
tests/algos/test_trl_parity.py); TRL's `luspo` is no surrogate but the clip with a sequence-level
ratio and a token-sum aggregation (config/aliases.py). CONTRIBUTING.md "Adding a loss option" adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import math
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


def _weighted(loss_tok: torch.Tensor, is_weights: torch.Tensor | None, logp: torch.Tensor) -> torch.Tensor:
    """The per-token loss times the importance weights (engine mismatch, staleness) as constants."""
    if is_weights is None:
        return loss_tok
    check_same_shape("is_weights", is_weights, "logp", logp)
    return loss_tok * is_weights.detach()


def _log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, ratio_level: RatioLevel, mask: torch.Tensor | None) -> torch.Tensor:
    """log(pi / pi_old) [B,T], clamped to +-20 before any exp: per token, or (GSPO) the mean over
    each sequence's mask tokens, repeated on every token of the sequence."""
    check_ndim("logp", logp, 2, "[B,T]")
    check_same_shape("old_logp", old_logp, "logp", logp)
    check_choice("ratio_level", ratio_level, ("token", "sequence"))
    log_ratio = (logp - old_logp.detach()).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    if ratio_level == "token":
        return log_ratio
    if mask is None:
        raise ValueError("ratio_level='sequence' needs mask [B,T] to average the log-ratio over each sequence")
    check_same_shape("mask", mask, "logp", logp)
    keep = mask.bool()
    seq_log_ratio = torch.where(keep, log_ratio, 0.0).sum(-1) / keep.sum(-1).clamp(min=1)
    return seq_log_ratio.unsqueeze(-1).expand_as(logp)


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
    check_positive("eps_low", eps_low, allow_zero=True)
    check_positive("eps_high", eps_high, allow_zero=True)
    if eps_low >= 1:
        raise ValueError(f"eps_low={eps_low} must be < 1 (the lower clip bound is 1 - eps_low)")
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip={dual_clip} must be > 1 (it bounds the loss of negative advantages at -A*c)")
    if delta is not None and delta <= 1 + eps_high:
        raise ValueError(f"delta={delta} must be > 1 + eps_high = {1 + eps_high} (it caps the unclipped ratio)")
    adv = _token_advantages(adv_tok, logp)
    ratio = torch.exp(_log_ratio(logp, old_logp, ratio_level, mask))

    unclipped = ratio if delta is None else ratio.clamp(max=delta)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    loss_tok = torch.maximum(-adv * unclipped, -adv * clipped)
    negative = adv < 0
    dual_clipped = torch.zeros_like(logp, dtype=torch.bool)
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual_clipped = negative & (loss_tok.detach() > bound)
        loss_tok = torch.where(negative, torch.minimum(loss_tok, bound), loss_tok)
    loss_tok = _weighted(loss_tok, is_weights, logp)

    ratio_d = ratio.detach()
    info = {
        "ratio": ratio_d,
        "clipped_low": negative & (ratio_d < 1 - eps_low),
        "clipped_high": (adv > 0) & (ratio_d > 1 + eps_high),
        "dual_clipped": dual_clipped.expand_as(logp),
    }
    return loss_tok, info


def cispo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv_tok: torch.Tensor,
    cispo_cap: float = 5.0,
    ratio_level: RatioLevel = "token",
    mask: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CISPO (MiniMax-M1, arXiv 2506.13585): l = -sg(min(rho, cispo_cap)) * A * logp.

    The importance weight is truncated and held constant instead of the update being clipped, so a
    token whose ratio left the trust region still gets a gradient, scaled by the capped weight
    (PPO's clip gives it none). `cispo_cap` is an absolute bound on rho (ScaleRL's eps_max, 5.0;
    TRL's `epsilon_high` under loss_type=cispo). Shapes as `clipped_pg_token_loss`; info
    "clipped_high" marks the tokens whose weight was truncated (either sign of A).
    """
    check_positive("cispo_cap", cispo_cap)
    adv = _token_advantages(adv_tok, logp)
    ratio = torch.exp(_log_ratio(logp, old_logp, ratio_level, mask)).detach()
    loss_tok = -ratio.clamp(max=cispo_cap) * adv * logp
    loss_tok = _weighted(loss_tok, is_weights, logp)
    return loss_tok, {"ratio": ratio, "clipped_high": (ratio > cispo_cap).expand_as(logp)}


def sapo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv_tok: torch.Tensor,
    sapo_tau_pos: float = 1.0,
    sapo_tau_neg: float = 1.05,
    ratio_level: RatioLevel = "token",
    mask: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAPO (arXiv 2511.20347): a soft gate in place of the hard clip,
    l = -A * (4 / tau) * sigmoid(tau * (rho - 1)), tau = sapo_tau_pos where A > 0 else sapo_tau_neg.

    The gate's gradient is A * rho * 4 sigmoid'(tau (rho - 1)): exactly PPO's at rho = 1, and it
    decays smoothly (faster for larger tau) as rho leaves 1 instead of dropping to 0 at a bound. A
    larger tau for A <= 0 damps negative updates sooner, as the paper advises. Shapes as
    `clipped_pg_token_loss`; SAPO never clips, so info has the ratio alone.
    """
    check_positive("sapo_tau_pos", sapo_tau_pos)
    check_positive("sapo_tau_neg", sapo_tau_neg)
    adv = _token_advantages(adv_tok, logp)
    ratio = torch.exp(_log_ratio(logp, old_logp, ratio_level, mask))
    tau = torch.where(adv > 0, logp.new_tensor(sapo_tau_pos), logp.new_tensor(sapo_tau_neg))
    loss_tok = -adv * torch.sigmoid(tau * (ratio - 1)) * 4 / tau
    loss_tok = _weighted(loss_tok, is_weights, logp)
    return loss_tok.expand_as(logp), {"ratio": ratio.detach().expand_as(logp)}


# log(1e-8): VESPO's floor on the sequence weight (the reference implementation's, kept for parity).
_VESPO_LOG_FLOOR = math.log(1e-8)


def vespo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv_tok: torch.Tensor,
    vespo_k_pos: float = 2.0,
    vespo_lambda_pos: float = 3.0,
    vespo_k_neg: float = 3.0,
    vespo_lambda_neg: float = 2.0,
    mask: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VESPO (arXiv 2602.10693): l = -sg(phi(w)) * A * logp with a gamma-shaped weight of the
    sequence's importance ratio w = prod_t rho_t (times the engine weights `is_weights`, when given):

        phi(w) = exp(lambda) * w^k * exp(-lambda w),  phi(1) = 1,

    (k, lambda) = (vespo_k_pos, vespo_lambda_pos) for A >= 0, else the _neg pair. phi falls to 0 both
    for w -> 0 (power k) and w -> inf (decay lambda): one smooth weight in place of clip + TIS, so the
    engine weights enter w (in log space, over mask tokens) instead of multiplying the loss. It
    always uses the whole-sequence product, so loss.ratio_level does not apply. Needs `mask`.
    info "ratio" is w on every token of its sequence; there is no clip flag.
    """
    for name, value in (("vespo_k_pos", vespo_k_pos), ("vespo_k_neg", vespo_k_neg)):
        check_positive(name, value, allow_zero=True)
    for name, value in (("vespo_lambda_pos", vespo_lambda_pos), ("vespo_lambda_neg", vespo_lambda_neg)):
        check_positive(name, value)
    if mask is None:
        raise ValueError("vespo needs mask [B,T]: its weight is a product over each sequence's tokens")
    adv = _token_advantages(adv_tok, logp)
    keep = mask.bool()
    log_w = torch.where(keep, _log_ratio(logp, old_logp, "token", None), 0.0).sum(-1, keepdim=True)
    if is_weights is not None:
        check_same_shape("is_weights", is_weights, "logp", logp)
        log_is = torch.log(is_weights.detach()).clamp(_VESPO_LOG_FLOOR, LOG_RATIO_LIMIT)
        log_w = log_w + torch.where(keep, log_is, 0.0).sum(-1, keepdim=True)
    log_w = log_w.detach().clamp(_VESPO_LOG_FLOOR, LOG_RATIO_LIMIT)
    nonneg = adv >= 0
    k = torch.where(nonneg, logp.new_tensor(vespo_k_pos), logp.new_tensor(vespo_k_neg))
    lam = torch.where(nonneg, logp.new_tensor(vespo_lambda_pos), logp.new_tensor(vespo_lambda_neg))
    phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    loss_tok = -phi * adv * logp
    return loss_tok, {"ratio": torch.exp(log_w).expand_as(logp)}


@dataclass(frozen=True)
class Surrogate:
    fn: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    summary: str  # one line for `explain`; {low}, {high} (the clip bounds) and any loss.* key are filled in
    reads: tuple[str, ...]  # the loss.* keys passed to fn as keyword arguments (besides mask and is_weights)


CLIP_OPTIONS = ("eps_low", "eps_high", "dual_clip", "delta", "ratio_level")

SURROGATES: dict[str, Surrogate] = {
    "clip": Surrogate(clipped_pg_token_loss, "PPO clipped surrogate, ratio clipped to [{low:g}, {high:g}] "
                                             "({ratio_level}-level ratio)", CLIP_OPTIONS),
    "cispo": Surrogate(cispo_token_loss, "CISPO: -sg(min(ratio, {cispo_cap:g})) * A * logp, no token loses its "
                                         "gradient ({ratio_level}-level ratio)", ("cispo_cap", "ratio_level")),
    "sapo": Surrogate(sapo_token_loss, "SAPO soft gate -A * 4/tau * sigmoid(tau (ratio - 1)), tau = "
                                       "{sapo_tau_pos:g} (A > 0) / {sapo_tau_neg:g} ({ratio_level}-level ratio)",
                      ("sapo_tau_pos", "sapo_tau_neg", "ratio_level")),
    "vespo": Surrogate(vespo_token_loss, "VESPO: -sg(phi(w)) * A * logp, phi(w) = e^l w^k e^(-l w) of the sequence "
                                         "ratio w, (k, l) = ({vespo_k_pos:g}, {vespo_lambda_pos:g}) for A >= 0, "
                                         "({vespo_k_neg:g}, {vespo_lambda_neg:g}) below",
                       ("vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg")),
}
