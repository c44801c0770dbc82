"""Reducing per-token losses to a scalar, in a way that survives micro-batch and data-parallel splits.

Modes (ALGORITHMS.md section 6), with N_tok = mask-1 tokens and N_seq = sequences of the batch:
  token_mean            sum_{i,t} l / N_tok                     TRL bnpo (dapo with global N_tok), verl token-mean
  seq_mean_token_mean   sum_i (sum_t l / max(|o_i|,1)) / N_seq  TRL grpo, verl seq-mean-token-mean
  seq_mean_token_sum    sum_i sum_t l / N_seq                   verl seq-mean-token-sum
  seq_sum_const         sum_{i,t} l / (N_seq * const_len)       TRL dr_grpo (const_len = max completion length)

Every mode is a sum over this shard's tokens divided by a normaliser. Passing the GLOBAL N_tok /
N_seq (the whole optimizer step, all micro-batches and ranks) makes each call an additive share:
summing the shares gives the whole-batch value, so accumulation and data parallelism change nothing.
"""

from __future__ import annotations

from typing import Literal

import torch

from align.algos._checks import check_choice, check_ndim, check_positive, check_same_shape

AggMode = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const"]
AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const")


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `values` where mask is nonzero; padded positions are dropped even if they hold NaN/inf."""
    kept = torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over mask-1 positions (0 when the mask is empty); a scalar."""
    return masked_sum(values, mask) / mask.bool().sum().clamp(min=1)


def aggregate(
    loss_tok: torch.Tensor,
    mask: torch.Tensor,
    mode: AggMode = "seq_mean_token_mean",
    const_len: int | None = None,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B,T] with its loss mask [B,T] to a scalar.

    num_tokens / num_seqs: the GLOBAL counts of mask-1 tokens / sequences over the whole optimizer
    step; the result is then this shard's additive contribution. Left None, they are taken from
    this call's mask (whole-batch semantics). Only the count the mode needs is used; passing both
    is fine. const_len is required for seq_sum_const. An empty completion adds 0 to the sums but
    still counts as a sequence. Returns a 0-d tensor in loss_tok's dtype.
    """
    check_ndim("loss_tok", loss_tok, 2, "[B,T]")
    check_same_shape("mask", mask, "loss_tok", loss_tok)
    check_choice("mode", mode, AGG_MODES)
    if mode == "token_mean":
        n_tok = mask.bool().sum() if num_tokens is None else torch.as_tensor(num_tokens)
        return masked_sum(loss_tok, mask) / n_tok.to(loss_tok).clamp(min=1)

    n_seq = float(loss_tok.shape[0]) if num_seqs is None else float(num_seqs)
    n_seq = max(n_seq, 1.0)
    if mode == "seq_mean_token_mean":
        lengths = mask.bool().sum(-1).clamp(min=1).to(loss_tok)
        return (masked_sum(loss_tok, mask, dim=-1) / lengths).sum() / n_seq
    if mode == "seq_mean_token_sum":
        return masked_sum(loss_tok, mask) / n_seq
    if const_len is None:
        raise ValueError("aggregate mode 'seq_sum_const' needs const_len (e.g. the max completion length)")
    check_positive("const_len", const_len)
    return masked_sum(loss_tok, mask) / (n_seq * const_len)


def seq_logprob(logp: torch.Tensor, mask: torch.Tensor, reduce: Literal["sum", "mean"] = "sum") -> torch.Tensor:
    """Sequence log-likelihood from per-token log-probs: logp, mask [B,T] -> [B].

    "sum" = log pi(o) (CoPG), "mean" = length-normalised (GRAO's Jexp/Jimit). An empty sequence gives 0.
    """
    check_ndim("logp", logp, 2, "[B,T]")
    check_same_shape("mask", mask, "logp", logp)
    check_choice("reduce", reduce, ("sum", "mean"))
    total = masked_sum(logp, mask, dim=-1)
    if reduce == "sum":
        return total
    return total / mask.bool().sum(-1).clamp(min=1).to(total)
