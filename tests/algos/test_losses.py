"""Clipped surrogate, GRPO loss, TIS: hand cases, analytic gradients and stop-gradient rules."""

import math

import pytest
import torch

from align.algos import clipped_pg_token_loss, grpo_loss, logprob_mismatch_metrics, tis_weights

F64 = torch.float64


def _pg(ratio, adv, **kwargs):
    """Per-token loss and d loss / d logp for single tokens at the given ratios (old_logp = 0)."""
    logp = torch.log(torch.tensor([ratio], dtype=F64)).unsqueeze(-1).requires_grad_()
    loss, info = clipped_pg_token_loss(logp, torch.zeros_like(logp), torch.tensor([adv], dtype=F64), **kwargs)
    loss.sum().backward()
    return float(loss.detach()), float(logp.grad), {k: bool(v.flatten()[0]) for k, v in info.items() if v.dtype == torch.bool}


@pytest.mark.parametrize(
    "ratio, adv, kwargs, loss, grad, flag",
    [
        # A > 0: ratio above 1+eps is clipped (no gradient), below it is not (grad = -A * ratio)
        (1.5, 1.0, {}, -1.2, 0.0, "clipped_high"),
        (0.5, 1.0, {}, -0.5, -0.5, None),
        # A < 0: ratio below 1-eps is clipped, above it is not
        (0.5, -1.0, {}, 0.8, 0.0, "clipped_low"),
        (1.5, -1.0, {}, 1.5, 1.5, None),
        # clip-higher (DAPO): 1.25 is inside [0.8, 1.28]
        (1.25, 1.0, {"eps_high": 0.28}, -1.25, -1.25, None),
        (1.25, 1.0, {}, -1.2, 0.0, "clipped_high"),
        (0.75, -2.0, {"eps_low": 0.3}, 1.5, 1.5, None),
        # dual clip c = 3 bounds an A < 0 loss at 3|A|
        (4.0, -1.0, {"dual_clip": 3.0}, 3.0, 0.0, "dual_clipped"),
        (2.0, -1.0, {"dual_clip": 3.0}, 2.0, 2.0, None),
        (4.0, 1.0, {"dual_clip": 3.0}, -1.2, 0.0, "clipped_high"),
        # delta caps the unclipped ratio (TRL two-sided clip)
        (2.0, -1.0, {"delta": 1.4}, 1.4, 0.0, None),
        (1.3, -1.0, {"delta": 1.4}, 1.3, 1.3, None),
    ],
)
def test_clipped_surrogate_by_hand(ratio, adv, kwargs, loss, grad, flag):
    got_loss, got_grad, flags = _pg(ratio, adv, **kwargs)
    assert math.isclose(got_loss, loss, abs_tol=1e-12)
    assert math.isclose(got_grad, grad, abs_tol=1e-12)
    for name, value in flags.items():
        assert value == (name == flag), name


def test_is_weights_multiply_the_loss_as_constants():
    logp = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    weights = torch.tensor([[0.5, 2.0]], dtype=F64, requires_grad=True)
    loss, _ = clipped_pg_token_loss(logp, torch.zeros_like(logp), torch.tensor([1.0], dtype=F64), is_weights=weights)
    torch.testing.assert_close(loss.detach(), torch.tensor([[-0.5, -2.0]], dtype=F64))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, -2.0]], dtype=F64))
    assert weights.grad is None


def test_sequence_level_ratio_is_exp_mean_log_ratio_over_mask():
    log_ratio = torch.tensor([[math.log(2.0), 0.0, 5.0]], dtype=F64)
    logp = log_ratio.clone().requires_grad_()
    mask = torch.tensor([[1, 1, 0]])
    loss, info = clipped_pg_token_loss(
        logp, torch.zeros_like(logp), torch.tensor([1.0], dtype=F64), eps_high=10.0, ratio_level="sequence", mask=mask
    )
    s = math.sqrt(2.0)  # exp((log 2 + 0) / 2); the padded 5.0 is ignored
    torch.testing.assert_close(info["ratio"], torch.full((1, 3), s, dtype=F64))
    # loss = -s on each of the 2 tokens; d(-2s)/dlogp_t = -2 * s / 2 on real tokens, 0 on padding
    (loss * mask).sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-s, -s, 0.0]], dtype=F64))
    with pytest.raises(ValueError, match="needs mask"):
        clipped_pg_token_loss(logp, logp.detach(), torch.ones(1), ratio_level="sequence")


def test_log_ratio_is_clamped_before_exp():
    logp = torch.tensor([[100.0]], dtype=F64, requires_grad=True)
    loss, info = clipped_pg_token_loss(logp, torch.zeros_like(logp), torch.tensor([-1.0], dtype=F64))
    assert math.isclose(float(info["ratio"]), math.exp(20.0), rel_tol=1e-12) and torch.isfinite(loss).all()


@pytest.mark.parametrize(
    "agg, extra, scale",
    [
        ("seq_mean_token_mean", {}, lambda lens, B, N: 1 / (lens * B)),
        ("token_mean", {}, lambda lens, B, N: torch.full_like(lens, 1 / N)),
        ("seq_mean_token_sum", {}, lambda lens, B, N: torch.full_like(lens, 1 / B)),
        ("seq_sum_const", {"const_len": 5}, lambda lens, B, N: torch.full_like(lens, 1 / (B * 5))),
    ],
)
def test_grpo_gradient_at_ratio_one_is_minus_advantage_over_normaliser(agg, extra, scale):
    # At rho = 1 (mu = 1) d l_t / d logp_t = -A; aggregation divides by |o_i| * B, N_tok, B or B * L.
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    adv = torch.tensor([0.7, -1.3, 0.2], dtype=F64)
    logp = torch.randn(3, 4, dtype=F64).requires_grad_()
    loss, metrics = grpo_loss(logp, logp.detach(), adv, mask, agg=agg, **extra)
    loss.backward()
    lens = mask.sum(1).to(F64)
    expected = (-adv * scale(lens, 3, float(mask.sum()))).unsqueeze(1) * mask
    torch.testing.assert_close(logp.grad, expected)
    assert float(metrics["clip_frac_low"]) == float(metrics["clip_frac_high"]) == 0.0
    assert math.isclose(float(metrics["ratio_mean"]), 1.0)
    assert math.isclose(float(metrics["pg_loss"]), float(loss.detach()))


def test_grpo_kl_term_gradient_and_metric():
    # ratio 1, A = 0: only the KL acts. k3 gradient 1 - exp(-d), d = logp - ref; seq_mean_token_mean /(|o| B).
    logp = torch.tensor([[0.5, -0.2], [0.1, 9.0]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[0.0, 0.0], [0.3, 0.0]], dtype=F64)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, metrics = grpo_loss(logp, logp.detach(), torch.zeros(2, dtype=F64), mask, ref_logp=ref, beta=0.04)
    loss.backward()
    d = (logp - ref).detach()
    per_token = 1 - torch.exp(-d)
    expected = 0.04 * per_token / torch.tensor([[2 * 2], [1 * 2]], dtype=F64) * mask
    torch.testing.assert_close(logp.grad, expected)
    k3 = torch.exp(-d) - 1 + d
    assert math.isclose(float(metrics["kl"]), float((k3 * mask).sum() / 3), rel_tol=1e-12)
    assert float(metrics["pg_loss"]) == 0.0
    _, no_kl = grpo_loss(logp, logp.detach(), torch.zeros(2), mask, ref_logp=ref, beta=0.0)
    assert float(no_kl["kl"]) == 0.0


def test_grpo_clip_fraction_metrics_over_mask_tokens():
    # tokens: (ratio 1.5, A>0) high-clipped; (0.5, A<0) low-clipped; (1.0) neither; padding ignored
    logp = torch.log(torch.tensor([[1.5, 1.0, 9.0], [0.5, 1.0, 9.0]], dtype=F64))
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    _, m = grpo_loss(logp, torch.zeros_like(logp), torch.tensor([1.0, -1.0], dtype=F64), mask)
    assert float(m["clip_frac_high"]) == 0.25 and float(m["clip_frac_low"]) == 0.25
    assert math.isclose(float(m["ratio_mean"]), (1.5 + 1 + 0.5 + 1) / 4)
    assert float(m["num_tokens"]) == 4
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())


def test_stop_gradients_on_old_ref_and_advantages():
    logp = torch.randn(2, 3, requires_grad=True)
    old = torch.randn(2, 3, requires_grad=True)
    ref = torch.randn(2, 3, requires_grad=True)
    adv = torch.randn(2, 3, requires_grad=True)
    loss, _ = grpo_loss(logp, old, adv, torch.ones(2, 3), ref_logp=ref, beta=0.1)
    loss.backward()
    assert logp.grad is not None and old.grad is None and ref.grad is None and adv.grad is None


def test_grpo_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="needs ref_logp"):
        grpo_loss(x, x, torch.zeros(2), x, beta=0.1)
    with pytest.raises(ValueError, match="adv_tok has shape"):
        grpo_loss(x, x, torch.zeros(3), x)
    with pytest.raises(ValueError, match="dual_clip"):
        grpo_loss(x, x, torch.zeros(2), x, dual_clip=0.5)
    with pytest.raises(ValueError, match="delta"):
        grpo_loss(x, x, torch.zeros(2), x, delta=1.1)


def test_tis_weights_truncate_and_are_constants():
    old = torch.log(torch.tensor([[3.0, 0.5, 1.0]])).requires_grad_()
    engine = torch.tensor([[0.0, 0.0, float("nan")]])
    w = tis_weights(old, engine, cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.5, 1.0]]))
    assert not w.requires_grad
    m = logprob_mismatch_metrics(old.detach(), torch.zeros(1, 3), torch.tensor([[1, 1, 0]]))
    assert math.isclose(float(m["abs_diff_max"]), math.log(3.0), rel_tol=1e-6)
    assert math.isclose(float(m["abs_diff_mean"]), (math.log(3.0) + math.log(2.0)) / 2, rel_tol=1e-6)
    assert float(m["tis_capped_frac"]) == 0.5
