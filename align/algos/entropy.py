"""Which tokens carry the policy gradient, by their entropy (Beyond the 80/20 Rule, arXiv 2506.01939).

The paper finds that the few high-entropy "forking" tokens drive what RL with verifiable rewards
learns; training only on the top rho of tokens by entropy (rho = 0.2) matches or beats all tokens.
`loss.top_entropy_quantile=rho` keeps those in the policy-gradient term (the KL term and the
normaliser keep every token, as TRL's `top_entropy_quantile` does).
"""

from __future__ import annotations

import torch

from align.algos._checks import check_same_shape


def entropy_threshold(pool: torch.Tensor, top_quantile: float) -> torch.Tensor:
    """The entropy at or above which a token is among the top `top_quantile` of `pool`.

    pool: 1-D entropies of every loss token of the optimizer step (all micro-batches, all ranks: a
    threshold per micro-batch would change with the split). Returns the (1 - top_quantile) quantile
    (linear interpolation, torch.quantile), 0-d; +inf for an empty pool (no token kept).
    top_quantile 0 keeps the highest-entropy token(s) only, 1 keeps every token.
    """
    if not 0.0 <= top_quantile <= 1.0:
        raise ValueError(f"top_quantile={top_quantile} must be in [0, 1] (the share of tokens kept, by entropy)")
    if pool.numel() == 0:
        return torch.tensor(float("inf"))
    return torch.quantile(pool.detach().float().flatten(), 1.0 - top_quantile)


def top_entropy_mask(
    entropy: torch.Tensor, mask: torch.Tensor, top_quantile: float, pool: torch.Tensor | None = None
) -> torch.Tensor:
    """[B,T] bool: mask tokens whose entropy is >= the threshold of `pool` (default: this call's mask
    tokens). entropy and mask [B,T]."""
    check_same_shape("mask", mask, "entropy", entropy)
    keep = mask.bool()
    threshold = entropy_threshold(entropy.detach()[keep] if pool is None else pool, top_quantile)
    return (entropy.detach() >= threshold.to(entropy.device)) & keep
