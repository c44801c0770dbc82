"""GPU check of the chunked log-prob paths at a real vocabulary size (skipped without CUDA).

Shape of Qwen2.5-0.5B's head (H 896, V 151936) in bf16. Asserts the chunked paths match the naive
`log_softmax(logits.float())` in value and gradient, that their peak memory for forward + backward is
below the naive path's, and that the from-hidden path's peak barely grows with the token count (it is
one chunk's working set) while the naive one doubles. Prints peaks and times (`pytest -s`).
"""

import time

import pytest
import torch

from align.algos import token_logprobs, token_logprobs_from_hidden

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
H, V, CHUNK = 896, 151936, 512


def _naive(hidden, weight, tokens):
    logits = (hidden @ weight.t()).float()
    return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _from_logits(hidden, weight, tokens):
    return token_logprobs((hidden @ weight.t()).unsqueeze(0), tokens.unsqueeze(0), chunk_size=CHUNK)[0]


def _from_hidden(hidden, weight, tokens):
    return token_logprobs_from_hidden(hidden.unsqueeze(0), weight, tokens.unsqueeze(0), chunk_size=CHUNK)[0]


def _run(fn, hidden, weight, tokens, upstream):
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    logp = fn(h, w, tokens)
    (logp * upstream).sum().backward()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - base
    return logp.detach(), h.grad, w.grad, peak, seconds


def _measure(n):
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(n, H, device="cuda", generator=g).bfloat16()
    weight = (torch.randn(V, H, device="cuda", generator=g) * 0.05).bfloat16()
    tokens = torch.randint(0, V, (n,), device="cuda", generator=g)
    upstream = torch.randn(n, device="cuda", generator=g)
    results = {}
    for name, fn in (("naive", _naive), ("token_logprobs", _from_logits), ("from_hidden", _from_hidden)):
        _run(fn, hidden, weight, tokens, upstream)  # warm-up
        results[name] = _run(fn, hidden, weight, tokens, upstream)
        _, _, _, peak, seconds = results[name]
        print(f"N={n:5d} {name:15s} peak {peak / 2**30:6.2f} GiB  fwd+bwd {seconds * 1e3:7.1f} ms")
    ref_logp, ref_gh, ref_gw = results["naive"][:3]
    for name in ("token_logprobs", "from_hidden"):
        logp, gh, gw, peak, _ = results[name]
        torch.testing.assert_close(logp, ref_logp, atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(gh.float(), ref_gh.float(), atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(gw.float(), ref_gw.float(), atol=2e-2, rtol=2e-2)
        assert peak < results["naive"][3]
    return {name: result[3] for name, result in results.items()}


def test_chunked_paths_match_naive_with_less_memory():
    small, large = _measure(4096), _measure(8192)
    assert large["naive"] > 1.8 * small["naive"]
    assert large["from_hidden"] < 1.15 * small["from_hidden"]
    assert large["from_hidden"] < large["naive"] / 4
