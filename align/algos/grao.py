"""GRAO: reference-answer-aware advantages and the three-term loss (ALGORITHMS.md section 3, Eq. 3-4)."""

from __future__ import annotations

import torch

from align.algos._checks import as_valid, check_ndim, check_positive, check_same_shape
from align.algos.advantages import check_rewards
from align.algos.aggregate import seq_logprob


@torch.no_grad()
def grao_advantages(
    r_o: torch.Tensor,
    r_y: torch.Tensor,
    pool_ref: bool = True,
    ddof: int = 0,
    eps: float = 1e-6,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A = (R - mu) / (sigma + eps) for the G samples and the reference answer y of each prompt.

    r_o: [P,G] sample rewards R(o_i, y); r_y: [P] reward of y itself (0 = a tie under a pairwise judge).
    pool_ref=True: mu, sigma over the G+1 rewards {r_o, r_y} (our choice, see the spec); False: over
    the G samples only, with A_y = 0 where sigma = 0. ddof 0 = population std. valid [P,G]: invalid
    samples get A_o = 0 and are left out of the statistics. Returns (A_o [P,G], A_y [P]), float32
    (float64 for float64 input).
    """
    check_ndim("r_o", r_o, 2, "[P,G]")
    check_ndim("r_y", r_y, 1, "[P]")
    if r_y.shape[0] != r_o.shape[0]:
        raise ValueError(f"r_y has {r_y.shape[0]} entries but r_o has {r_o.shape[0]} prompts; pass one R(y) per prompt")
    if not isinstance(ddof, int) or ddof < 0:
        raise ValueError(f"ddof={ddof!r} must be a non-negative int (0 = population std, as in GRAO's Eq. 4)")
    check_positive("eps", eps, allow_zero=True)
    valid = as_valid(valid, r_o, "r_o")
    check_rewards(r_o, valid)
    check_rewards(r_y, torch.ones_like(r_y, dtype=torch.bool))
    out_dtype = torch.float64 if r_o.dtype == torch.float64 else torch.float32

    values = torch.where(valid, r_o.to(torch.float64), 0.0)
    weight = valid.to(torch.float64)
    ref = r_y.to(torch.float64).unsqueeze(1)
    if pool_ref:
        values = torch.cat([values, ref], dim=1)
        weight = torch.cat([weight, torch.ones_like(ref)], dim=1)
    count = weight.sum(1, keepdim=True)
    mean = (values * weight).sum(1, keepdim=True) / count.clamp(min=1)
    var = ((values - mean) ** 2 * weight).sum(1, keepdim=True) / (count - ddof).clamp(min=1)
    sigma = var.sqrt()
    # Equal rewards give exactly 0 (not rounding noise / eps), as the spec's edge case requires.
    high = torch.where(weight > 0, values, -torch.inf).amax(1, keepdim=True)
    low = torch.where(weight > 0, values, torch.inf).amin(1, keepdim=True)
    tied = high == low
    a_o = torch.where(tied | ~valid, 0.0, (r_o.to(torch.float64) - mean) / (sigma + eps))
    a_y = (ref - mean) / (sigma + eps)
    a_y = torch.where(tied if pool_ref else (tied | (sigma == 0)), 0.0, a_y)
    return a_o.to(out_dtype), a_y.squeeze(1).to(out_dtype)


def _mean(values: torch.Tensor) -> torch.Tensor:
    # An empty shard logs 0, not NaN.
    return values.sum() / max(values.numel(), 1)


def grao_loss(
    logp_o: torch.Tensor,
    mask_o: torch.Tensor,
    logp_y: torch.Tensor,
    mask_y: torch.Tensor,
    A_o: torch.Tensor,
    A_y: torch.Tensor,
    beta: float = 0.5,
    lam: float = 0.6,
    num_prompts: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRAO loss = -mean_p (1/G) sum_i [A_o*Jexp(o_i) + beta*A_y*Jimit(y) + lam*A_o*(Jexp(o_i) - Jimit(y))].

    logp_o, mask_o: [P,G,T] sample log-probs (grad) and loss mask; logp_y, mask_y: [P,Ty] for the
    reference answer; A_o [P,G], A_y [P] constants. J are length-normalised log-likelihoods (an empty
    o gives Jexp = 0; an empty y is an error). num_prompts: global prompt count of the optimizer step
    (the result is then this shard's additive share); None = this call's P. is_weights [P,G,T]: per-token
    weights (detached) on the samples' log-likelihoods in Jexp, for samples from older weights
    (ALGORITHMS.md section 9); y is the dataset's, sampled by no policy, so Jimit takes none.
    Metrics (detached): j_explore, j_imitate, j_regulariser (the three batch-mean terms of J),
    jexp_mean, jimit_mean.
    """
    check_ndim("logp_o", logp_o, 3, "[P,G,T]")
    check_same_shape("mask_o", mask_o, "logp_o", logp_o)
    check_ndim("logp_y", logp_y, 2, "[P,Ty]")
    check_same_shape("mask_y", mask_y, "logp_y", logp_y)
    P, G, T = logp_o.shape
    if logp_y.shape[0] != P or A_o.shape != (P, G) or A_y.shape != (P,):
        raise ValueError(
            f"shapes disagree: logp_o {tuple(logp_o.shape)}, logp_y {tuple(logp_y.shape)}, A_o {tuple(A_o.shape)}, "
            f"A_y {tuple(A_y.shape)}; expected [P,G,T], [P,Ty], [P,G], [P]"
        )
    empty_y = mask_y.bool().sum(-1) == 0
    if empty_y.any():
        raise ValueError(
            f"reference answer y is empty for prompt(s) {empty_y.nonzero().flatten().tolist()}; drop those samples"
        )
    j_exp = seq_logprob(logp_o.reshape(P * G, T), mask_o.reshape(P * G, T), reduce="mean").reshape(P, G)
    j_exp_weighted = j_exp  # what the gradient sees; the metrics report the plain Jexp
    if is_weights is not None:
        check_same_shape("is_weights", is_weights, "logp_o", logp_o)
        weighted = (logp_o * is_weights.detach()).reshape(P * G, T)
        j_exp_weighted = seq_logprob(weighted, mask_o.reshape(P * G, T), reduce="mean").reshape(P, G)
    j_imit = seq_logprob(logp_y, mask_y, reduce="mean")  # [P]
    a_o, a_y = A_o.detach().to(j_exp), A_y.detach().to(j_exp)
    explore = (a_o * j_exp_weighted).mean(1)
    imitate = beta * a_y * j_imit
    regulariser = lam * (a_o * (j_exp_weighted - j_imit.unsqueeze(1))).mean(1)
    n_prompts = max(float(P if num_prompts is None else num_prompts), 1.0)
    loss = -(explore + imitate + regulariser).sum() / n_prompts
    with torch.no_grad():
        metrics = {
            "j_explore": _mean(explore),
            "j_imitate": _mean(imitate),
            "j_regulariser": _mean(regulariser),
            "jexp_mean": _mean(j_exp),
            "jimit_mean": _mean(j_imit),
        }
    return loss, metrics
