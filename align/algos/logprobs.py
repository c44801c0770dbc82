"""Log-probabilities of the sampled tokens, in float32, without a full [B,T,V] float32 copy.

A 150k vocabulary at B*T = 16k tokens is 10 GB of float32 logits; `log_softmax(logits.float())` keeps
that (and its gradient) alive. Both functions here work on row chunks instead:
- `token_logprobs` takes the model's logits and saves only them plus one float per row for backward
  (a custom autograd function recomputes the softmax chunk by chunk);
- `token_logprobs_from_hidden` never builds the full logits at all: it multiplies the final hidden
  states by the lm_head chunk by chunk under activation checkpointing.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from align.algos._checks import check_ndim, check_positive


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # bf16/fp16 logits are upcast to float32 (the spec's numerics rule); float64 stays float64.
    return torch.promote_types(dtype, torch.float32)


def _check_tokens(tokens: torch.Tensor, leading: torch.Size, vocab: int) -> None:
    if tokens.shape != leading:
        raise ValueError(f"tokens has shape {tuple(tokens.shape)} but the logits/hidden are {tuple(leading)} x ...")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"tokens must lie in [0, {vocab - 1}] (the vocabulary); replace padding ids before calling")


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """log softmax(logits / temperature)[token] per row; backward rebuilds softmax per chunk from saved lse."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tokens: torch.Tensor, chunk_size: int, temperature: float):
        dtype = _compute_dtype(logits.dtype)
        n = logits.shape[0]
        out = torch.empty(n, dtype=dtype, device=logits.device)
        lse = torch.empty(n, dtype=dtype, device=logits.device)
        for start in range(0, n, chunk_size):
            rows = slice(start, start + chunk_size)
            scaled = logits[rows].to(dtype) / temperature
            lse[rows] = torch.logsumexp(scaled, dim=-1)
            out[rows] = scaled.gather(-1, tokens[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
        ctx.save_for_backward(logits, tokens, lse)
        ctx.chunk_size, ctx.temperature = chunk_size, temperature
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        logits, tokens, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            g = grad_out[rows].to(lse.dtype).unsqueeze(-1)
            probs = torch.exp(logits[rows].to(lse.dtype) / ctx.temperature - lse[rows].unsqueeze(-1))
            chunk_grad = -g * probs
            chunk_grad.scatter_add_(-1, tokens[rows].unsqueeze(-1), g)
            grad[rows] = (chunk_grad / ctx.temperature).to(grad.dtype)
        return grad, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    chunk_size: int = 512,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits / temperature) at `tokens`: logits [B,T,V] (any float dtype), tokens [B,T] long.

    Returns [B,T] float32 (float64 for float64 logits), differentiable w.r.t. logits. Working memory
    is one [chunk_size, V] float32 block, forward and backward. Pass the sampling temperature so the
    result matches the engine's log-probs. return_entropy adds the per-token entropy [B,T] of the
    same distribution, detached (a metric).
    """
    check_ndim("logits", logits, 3, "[B,T,V]")
    check_positive("chunk_size", chunk_size)
    check_positive("temperature", temperature)
    _check_tokens(tokens, logits.shape[:2], logits.shape[-1])
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_tokens = tokens.reshape(-1).long()
    logp = _ChunkedTokenLogprobs.apply(flat_logits, flat_tokens, int(chunk_size), float(temperature))
    logp = logp.reshape(tokens.shape)
    if not return_entropy:
        return logp
    with torch.no_grad():
        dtype = _compute_dtype(logits.dtype)
        chunks = [_entropy(chunk.to(dtype) / temperature) for chunk in flat_logits.detach().split(int(chunk_size))]
        entropy = torch.cat(chunks) if chunks else logp.new_zeros(0)
    return logp, entropy.reshape(tokens.shape)


def token_entropy(logits: torch.Tensor, chunk_size: int = 512, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) per position, differentiable: logits [B,T,V] -> [B,T]
    float32 (float64 for float64 logits), for an entropy bonus (loss.entropy_coef).

    Each [chunk_size, V] block runs under activation checkpointing, so backward recomputes its
    float32 softmax instead of keeping one per block alive (the logits themselves are kept anyway).
    """
    check_ndim("logits", logits, 3, "[B,T,V]")
    check_positive("chunk_size", chunk_size)
    check_positive("temperature", temperature)
    dtype = _compute_dtype(logits.dtype)

    def block(chunk: torch.Tensor) -> torch.Tensor:
        return _entropy(chunk.to(dtype) / temperature)

    flat = logits.reshape(-1, logits.shape[-1])
    chunks = [checkpoint(block, chunk, use_reentrant=False) for chunk in flat.split(int(chunk_size))]
    entropy = torch.cat(chunks) if chunks else logits.new_zeros(0, dtype=dtype)
    return entropy.reshape(logits.shape[:2])


def _entropy(scaled_logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(x) - sum softmax(x) * x, per row."""
    lse = torch.logsumexp(scaled_logits, dim=-1, keepdim=True)
    return (lse.squeeze(-1) - (torch.exp(scaled_logits - lse) * scaled_logits).sum(-1))


def _hidden_chunk(
    hidden: torch.Tensor, weight: torch.Tensor, tokens: torch.Tensor, temperature: float, want_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    scaled = (hidden @ weight.t()).to(_compute_dtype(hidden.dtype)) / temperature
    lse = torch.logsumexp(scaled, dim=-1)
    logp = scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
    entropy = _entropy(scaled) if want_entropy else logp.new_zeros(0)
    return logp, entropy


def token_logprobs_from_hidden(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    tokens: torch.Tensor,
    chunk_size: int = 512,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sampled-token log-probs from final hidden states: hidden [B,T,H], lm_head_weight [V,H], tokens [B,T].

    Logits are formed chunk by chunk (in the hidden dtype, then upcast to float32, as the model's own
    head would) and each chunk runs under activation checkpointing, so backward keeps no chunk's
    logits alive. Returns logp [B,T] float32 (float64 for float64 input), and with return_entropy
    also the per-token entropy [B,T], differentiable too (for an entropy bonus).
    """
    check_ndim("hidden", hidden, 3, "[B,T,H]")
    check_ndim("lm_head_weight", lm_head_weight, 2, "[V,H]")
    if lm_head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"lm_head_weight is {tuple(lm_head_weight.shape)} but hidden size is {hidden.shape[-1]}; pass the [V,H] "
            "output embedding (model.get_output_embeddings().weight)"
        )
    check_positive("chunk_size", chunk_size)
    check_positive("temperature", temperature)
    _check_tokens(tokens, hidden.shape[:2], lm_head_weight.shape[0])
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_tokens = tokens.reshape(-1).long()
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or lm_head_weight.requires_grad)
    logps, entropies = [], []
    for start in range(0, flat_hidden.shape[0], int(chunk_size)):
        args = (flat_hidden[start : start + chunk_size], lm_head_weight, flat_tokens[start : start + chunk_size])
        if needs_grad:
            logp, entropy = checkpoint(_hidden_chunk, *args, temperature, return_entropy, use_reentrant=False)
        else:
            logp, entropy = _hidden_chunk(*args, temperature, return_entropy)
        logps.append(logp)
        entropies.append(entropy)
    dtype = _compute_dtype(hidden.dtype)
    logp = torch.cat(logps).reshape(tokens.shape) if logps else hidden.new_zeros(tokens.shape, dtype=dtype)
    if not return_entropy:
        return logp
    entropy = torch.cat(entropies).reshape(tokens.shape) if entropies else hidden.new_zeros(tokens.shape, dtype=dtype)
    return logp, entropy
