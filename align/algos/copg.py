"""CoPG: Contrastive Policy Gradient as a squared loss on KL-regularised sequence rewards (ALGORITHMS.md section 4)."""

from __future__ import annotations

import torch

from align.algos._checks import as_valid, check_ndim, check_positive, check_same_shape


def copg_loss(
    seq_logp: torch.Tensor,
    seq_ref_logp: torch.Tensor,
    rewards: torch.Tensor,
    beta: float = 0.1,
    valid: torch.Tensor | None = None,
    num_groups: float | None = None,
    num_valid: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CoPG loss: mean over prompts of 1/(k-1) * sum_{i<j} (Rb_i - Rb_j)^2, Rb = R - beta*(log pi - log pi_ref).

    seq_logp [P,G]: summed completion log-probs under pi (grad); seq_ref_logp [P,G] under pi_ref and
    rewards [P,G]: constants. valid [P,G] bool or None. k = valid members of a prompt; prompts with
    k < 2 are left out of the mean (loss 0 if none is left). Uses sum_{i<j}(x_i-x_j)^2 =
    k * sum_i (x_i - mean)^2, so dl/dlog pi_i = -2*beta*k/(k-1) * (Rb_i - mean Rb): REINFORCE with a
    leave-one-out baseline. num_groups: the global count of prompts with k >= 2 over the optimizer
    step (the result is then this shard's additive share); None = counted here. num_valid: the global
    count of valid completions, likewise for the two mean metrics.
    Metrics (detached): reg_reward_mean (mean Rb), log_ratio_mean (mean log pi - log pi_ref), each
    over the valid completions; num_groups (prompts with k >= 2 in this call).
    """
    check_ndim("seq_logp", seq_logp, 2, "[P,G]")
    check_same_shape("seq_ref_logp", seq_ref_logp, "seq_logp", seq_logp)
    check_same_shape("rewards", rewards, "seq_logp", seq_logp)
    check_positive("beta", beta, allow_zero=True)
    valid = as_valid(valid, seq_logp, "seq_logp")
    if (valid & ~torch.isfinite(rewards)).any():
        raise ValueError("rewards has non-finite values at valid positions; mark unscorable completions valid=False")

    log_ratio = seq_logp - seq_ref_logp.detach()
    reg_reward = torch.where(valid, rewards.detach().to(seq_logp) - beta * log_ratio, 0.0)
    weight = valid.to(seq_logp)
    k = weight.sum(1)
    mean = reg_reward.sum(1, keepdim=True) / k.clamp(min=1).unsqueeze(1)
    sq_dev = ((reg_reward - mean) ** 2 * weight).sum(1)
    used = k >= 2
    per_group = torch.where(used, k / (k - 1).clamp(min=1) * sq_dev, 0.0)
    n_groups = float(used.sum()) if num_groups is None else float(num_groups)
    loss = per_group.sum() / max(n_groups, 1.0)
    with torch.no_grad():
        n_valid = max(float(weight.sum()) if num_valid is None else float(num_valid), 1.0)
        metrics = {
            "reg_reward_mean": (reg_reward * weight).sum() / n_valid,
            "log_ratio_mean": torch.where(valid, log_ratio, 0.0).sum() / n_valid,
            "num_groups": used.sum().float(),
        }
    return loss, metrics
