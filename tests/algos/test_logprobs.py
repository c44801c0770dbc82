"""Chunked sampled-token log-probs: same values and gradients as a naive full log_softmax, less saved memory."""

import pytest
import torch

from align.algos import token_logprobs, token_logprobs_from_hidden

B, T, H, V = 3, 5, 8, 37


def _naive(logits, tokens, temperature=1.0):
    logp_all = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _data(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g) * 3).to(dtype)
    tokens = torch.randint(0, V, (B, T), generator=g)
    upstream = torch.randn(B, T, generator=g)
    return logits, tokens, upstream


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_value_and_gradient_match_naive(dtype, tol, chunk_size, temperature):
    logits, tokens, upstream = _data(dtype)
    ours_in = logits.clone().requires_grad_()
    naive_in = logits.clone().requires_grad_()
    ours, entropy = token_logprobs(ours_in, tokens, chunk_size=chunk_size, temperature=temperature, return_entropy=True)
    ref, ref_entropy = _naive(naive_in, tokens, temperature)
    assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(ours, ref.to(ours.dtype), atol=tol, rtol=tol)
    torch.testing.assert_close(entropy, ref_entropy.detach().to(ours.dtype), atol=tol, rtol=tol)
    (ours * upstream.to(ours)).sum().backward()
    (ref * upstream.to(ref)).sum().backward()
    assert ours_in.grad.dtype == dtype
    torch.testing.assert_close(ours_in.grad, naive_in.grad, atol=tol * 10, rtol=tol * 10)


def test_token_logprobs_gradcheck_float64():
    logits = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 6, (2, 3))
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, tokens, chunk_size=4, temperature=0.9), (logits,))


def _saved_bytes(fn):
    """Bytes of distinct storages autograd saves for backward while running fn()."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()  # the lm_head weight is saved per chunk but stored once
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def test_token_logprobs_saves_no_float32_copy_of_bf16_logits():
    logits, tokens, _ = _data(torch.bfloat16)
    logits.requires_grad_()
    ours, _ = _saved_bytes(lambda: token_logprobs(logits, tokens, chunk_size=4))
    naive, _ = _saved_bytes(lambda: _naive(logits, tokens)[0])
    bf16_bytes = logits.numel() * 2
    assert ours < bf16_bytes * 1.2  # the bf16 logits themselves plus a float per row
    assert naive >= bf16_bytes * 2  # at least one float32 [B,T,V] copy


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
def test_from_hidden_value_entropy_and_gradients_match_naive(dtype, tol):
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(B, T, H, generator=g).to(dtype)
    weight = torch.randn(V, H, generator=g).to(dtype)
    tokens = torch.randint(0, V, (B, T), generator=g)
    up1, up2 = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)

    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp, entropy = token_logprobs_from_hidden(h1, w1, tokens, chunk_size=4, return_entropy=True)
    (logp * up1 + entropy * up2).sum().backward()

    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    ref_logp, ref_entropy = _naive(h2 @ w2.t(), tokens)
    (ref_logp * up1 + ref_entropy * up2).sum().backward()

    assert logp.dtype == torch.float32
    torch.testing.assert_close(logp, ref_logp, atol=tol, rtol=tol)
    torch.testing.assert_close(entropy, ref_entropy, atol=tol, rtol=tol)
    grad_tol = 1e-4 if dtype == torch.float32 else 2e-2  # bf16 grads are rounded to bf16 on both sides
    torch.testing.assert_close(h1.grad, h2.grad, atol=grad_tol, rtol=grad_tol)
    torch.testing.assert_close(w1.grad, w2.grad, atol=grad_tol, rtol=grad_tol)


def test_from_hidden_keeps_no_chunk_logits_for_backward():
    hidden = torch.randn(4, 16, H, requires_grad=True)
    weight = torch.randn(500, H, requires_grad=True)
    tokens = torch.randint(0, 500, (4, 16))
    saved, logp = _saved_bytes(lambda: token_logprobs_from_hidden(hidden, weight, tokens, chunk_size=8))
    inputs = sum(t.numel() * t.element_size() for t in (hidden, weight, tokens))
    assert saved <= inputs  # only the inputs are kept: no chunk's [rows,V] logits
    naive, _ = _saved_bytes(lambda: _naive(hidden @ weight.t(), tokens)[0])
    assert naive >= inputs + 4 * 16 * 500 * 4  # the naive path keeps the full float32 logits
    logp.sum().backward()
    assert hidden.grad is not None and weight.grad is not None


def test_from_hidden_without_grad_and_errors():
    hidden, weight = torch.randn(1, 2, H), torch.randn(V, H)
    with torch.no_grad():
        logp = token_logprobs_from_hidden(hidden, weight, torch.tensor([[0, 1]]))
    torch.testing.assert_close(logp, _naive(hidden @ weight.t(), torch.tensor([[0, 1]]))[0])
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 36\]"):
        token_logprobs_from_hidden(hidden, weight, torch.tensor([[0, -100]]))
    with pytest.raises(ValueError, match="hidden size is 8"):
        token_logprobs_from_hidden(hidden, torch.randn(V, 4), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="tokens has shape"):
        token_logprobs(torch.randn(1, 2, V), torch.tensor([[0, 1, 2]]))
