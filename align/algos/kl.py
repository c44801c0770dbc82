"""KL estimators at the sampled token, for the loss or for the reward (ALGORITHMS.md section 1).

With d = logp - ref_logp (per token):
  k1 = d                     gradient 1 (useless as a loss on-policy: expectation 0; use in the reward)
  k2 = d^2 / 2               gradient d
  k3 = exp(-d) - 1 + d       gradient 1 - exp(-d); >= 0 and unbiased (GRPO, TRL, verl "low_var_kl")
  k3+ = value of k3, gradient of k2 (verl's "+" suffix: low-variance value, unbiased-gradient direction)
"""

from __future__ import annotations

from typing import Literal

import torch

from align.algos._checks import check_choice, check_positive, check_same_shape

KLKind = Literal["k1", "k2", "k3", "k3+"]
LOG_RATIO_LIMIT = 20.0  # exp(20) ~ 5e8: beyond this the estimate is noise and exp overflows in bf16


def _clamp(value: torch.Tensor, clamp: float | None) -> torch.Tensor:
    return value if clamp is None else value.clamp(-clamp, clamp)


def kl_estimate(
    logp: torch.Tensor, ref_logp: torch.Tensor, kind: KLKind = "k3", clamp: float | None = 10.0
) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref); any shape, same shape out.

    logp carries the gradient; ref_logp is treated as a constant. `clamp` bounds the returned value
    to [-clamp, clamp] (verl clamps k3 to +-10; None disables). For "k3+" the clamp applies to the
    k3 value only; the k2 gradient is left unclamped, as in verl.
    """
    check_choice("kind", kind, ("k1", "k2", "k3", "k3+"))
    check_same_shape("ref_logp", ref_logp, "logp", logp)
    if clamp is not None:
        check_positive("clamp", clamp)
    d = logp - ref_logp.detach()
    if kind == "k1":
        return _clamp(d, clamp)
    k2 = 0.5 * d**2
    if kind == "k2":
        return _clamp(k2, clamp)
    neg_d = (-d).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    k3 = _clamp(torch.exp(neg_d) - 1 - neg_d, clamp)
    if kind == "k3":
        return k3
    return k2 + (k3 - k2).detach()


@torch.no_grad()
def kl_penalty_rewards(
    rewards: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kind: KLKind = "k1",
) -> torch.Tensor:
    """KL in the reward (verl `use_kl_in_reward`): r - beta * sum_t KL_t over each completion's mask tokens.

    rewards: [...] (e.g. [P,G]); logp, ref_logp, mask: [..., T] with the same leading shape. `logp`
    is the sampling policy's (old) log-prob. Returns penalised rewards shaped like `rewards`,
    without gradient, ready for `group_advantages`.
    """
    check_same_shape("ref_logp", ref_logp, "logp", logp)
    check_same_shape("mask", mask, "logp", logp)
    if logp.shape[:-1] != rewards.shape:
        raise ValueError(
            f"logp has shape {tuple(logp.shape)} but rewards has {tuple(rewards.shape)}; "
            "logp must be rewards' shape plus a trailing token dimension"
        )
    check_positive("beta", beta, allow_zero=True)
    kl = kl_estimate(logp.to(torch.float64), ref_logp.to(torch.float64), kind=kind, clamp=None)
    kl_sum = torch.where(mask.bool(), kl, 0.0).sum(-1)
    return (rewards.to(torch.float64) - beta * kl_sum).to(rewards.dtype)
