"""GRAO advantages (pooled G+1 statistics) and the three-term loss (ALGORITHMS.md section 3)."""

import math

import pytest
import torch

from align.algos import grao_advantages, grao_loss

F64 = torch.float64


def test_all_samples_worse_than_reference_pooled():
    # G = 8 rewards -1 and R(y) = 0: mu = -8/9, sigma0 = sqrt(8)/9 -> A_o = -1/sqrt(8), A_y = sqrt(8)
    a_o, a_y = grao_advantages(torch.full((1, 8), -1.0, dtype=F64), torch.zeros(1, dtype=F64), eps=0.0)
    torch.testing.assert_close(a_o, torch.full((1, 8), -1 / math.sqrt(8), dtype=F64))
    torch.testing.assert_close(a_y, torch.tensor([math.sqrt(8)], dtype=F64))


def test_g_only_statistics_and_tied_samples():
    r_o = torch.tensor([[1.0, -1.0], [0.0, 0.0]], dtype=F64)
    r_y = torch.tensor([0.0, 5.0], dtype=F64)
    a_o, a_y = grao_advantages(r_o, r_y, pool_ref=False, eps=0.0)
    # prompt 0: mu 0, sigma0 1 -> A_o = +-1, A_y = 0; prompt 1: sigma = 0 -> everything 0
    torch.testing.assert_close(a_o, torch.tensor([[1.0, -1.0], [0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(a_y, torch.tensor([0.0, 0.0], dtype=F64))


def test_all_g_plus_one_rewards_equal_gives_zero_and_zero_loss():
    a_o, a_y = grao_advantages(torch.full((2, 3), 0.3), torch.full((2,), 0.3))
    assert torch.equal(a_o, torch.zeros(2, 3)) and torch.equal(a_y, torch.zeros(2))
    logp_o = torch.randn(2, 3, 4, requires_grad=True)
    loss, _ = grao_loss(logp_o, torch.ones(2, 3, 4), torch.randn(2, 5), torch.ones(2, 5), a_o, a_y)
    assert float(loss.detach()) == 0.0


def test_bessel_option_and_valid_members():
    r_o = torch.tensor([[1.0, 0.0, float("nan")]], dtype=F64)
    a_o, a_y = grao_advantages(r_o, torch.tensor([-1.0], dtype=F64), ddof=1, eps=0.0,
                               valid=torch.tensor([[True, True, False]]))
    # pooled {1, 0, -1}: mu 0, std1 1
    torch.testing.assert_close(a_o, torch.tensor([[1.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(a_y, torch.tensor([-1.0], dtype=F64))


def test_loss_by_hand_and_equivalent_form():
    # P = 1, G = 2; Jexp = [-1, -2] (means over masks), Jimit = -3 (mean of -2, -4)
    logp_o = torch.tensor([[[-1.0, -1.0, 9.0], [-2.0, 9.0, 9.0]]], dtype=F64, requires_grad=True)
    mask_o = torch.tensor([[[1, 1, 0], [1, 0, 0]]])
    logp_y = torch.tensor([[-2.0, -4.0]], dtype=F64, requires_grad=True)
    mask_y = torch.ones(1, 2)
    a_o = torch.tensor([[1.0, -0.5]], dtype=F64)
    a_y = torch.tensor([2.0], dtype=F64)
    beta, lam = 0.5, 0.6
    loss, metrics = grao_loss(logp_o, mask_o, logp_y, mask_y, a_o, a_y, beta, lam)
    j_exp, j_imit = torch.tensor([-1.0, -2.0], dtype=F64), -3.0
    per_i = a_o[0] * j_exp + beta * a_y[0] * j_imit + lam * a_o[0] * (j_exp - j_imit)
    expected = -per_i.mean()
    equivalent = -((1 + lam) * (a_o[0] * j_exp).mean() + (beta * a_y[0] - lam * a_o[0].mean()) * j_imit)
    assert math.isclose(float(loss.detach()), float(expected)) and math.isclose(float(expected), float(equivalent))
    assert math.isclose(float(metrics["jexp_mean"]), -1.5) and math.isclose(float(metrics["jimit_mean"]), -3.0)
    loss.backward()
    # dloss/dlogp_o[i,t] = -(1+lam) * A_o_i / (G * |o_i|); dloss/dlogp_y[t] = -(beta*A_y - lam*mean A_o) / |y|
    torch.testing.assert_close(
        logp_o.grad, torch.tensor([[[-1.6 / 4, -1.6 / 4, 0.0], [1.6 * 0.5 / 2, 0.0, 0.0]]], dtype=F64)
    )
    torch.testing.assert_close(logp_y.grad, torch.full((1, 2), -(0.5 * 2.0 - 0.6 * 0.25) / 2, dtype=F64))


def test_empty_sample_and_empty_reference():
    logp_o = torch.full((1, 2, 2), -1.0)
    mask_o = torch.tensor([[[1, 1], [0, 0]]])  # second sample empty: Jexp = 0
    loss, m = grao_loss(logp_o, mask_o, torch.full((1, 2), -1.0), torch.ones(1, 2),
                        torch.tensor([[1.0, 1.0]]), torch.zeros(1), beta=0.5, lam=0.0)
    assert math.isclose(float(loss.detach()), 0.5)  # -(1*(-1) + 1*0)/2
    with pytest.raises(ValueError, match=r"reference answer y is empty for prompt\(s\) \[1\]"):
        grao_loss(torch.zeros(2, 1, 2), torch.ones(2, 1, 2), torch.zeros(2, 2), torch.tensor([[1, 0], [0, 0]]),
                  torch.zeros(2, 1), torch.zeros(2))


def test_num_prompts_makes_shards_additive():
    g = torch.Generator().manual_seed(0)
    logp_o, logp_y = torch.randn(4, 3, 5, generator=g), torch.randn(4, 6, generator=g)
    mask_o = (torch.rand(4, 3, 5, generator=g) > 0.3).float()
    mask_y = torch.ones(4, 6)
    a_o, a_y = grao_advantages(torch.randn(4, 3, generator=g), torch.zeros(4))
    whole, _ = grao_loss(logp_o, mask_o, logp_y, mask_y, a_o, a_y)
    parts = sum(
        grao_loss(logp_o[s], mask_o[s], logp_y[s], mask_y[s], a_o[s], a_y[s], num_prompts=4)[0]
        for s in (slice(0, 1), slice(1, 4))
    )
    torch.testing.assert_close(parts, whole)


def _hand_case():
    logp_o = torch.tensor([[[-1.0, -1.0, 9.0], [-2.0, 9.0, 9.0]]], dtype=F64, requires_grad=True)
    mask_o = torch.tensor([[[1, 1, 0], [1, 0, 0]]])
    logp_y = torch.tensor([[-2.0, -4.0]], dtype=F64, requires_grad=True)
    return logp_o, mask_o, logp_y, torch.ones(1, 2), torch.tensor([[1.0, -0.5]], dtype=F64), torch.tensor([2.0], dtype=F64)


def test_weights_of_one_are_the_unweighted_loss_and_gradient_exactly():
    """The k = 0 reduction: weight 1 on every token changes neither the loss nor its gradient."""
    plain = _hand_case()
    loss, m = grao_loss(*plain, 0.5, 0.6)
    loss.backward()
    weighted = _hand_case()
    loss_w, m_w = grao_loss(*weighted, 0.5, 0.6, is_weights=torch.ones(1, 2, 3, dtype=F64))
    loss_w.backward()
    assert loss_w.item() == loss.item() and m_w == m
    assert torch.equal(weighted[0].grad, plain[0].grad) and torch.equal(weighted[2].grad, plain[2].grad)


def test_a_stale_tokens_weight_scales_its_gradient_and_leaves_the_reference_term():
    """A weight w on sample token (0, 0): its gradient is w times the unweighted -(1+lam)*A_o/(G*|o|);
    the other tokens' and the reference answer's gradients are unchanged; the metrics stay the plain Jexp."""
    case = _hand_case()
    w = torch.ones(1, 2, 3, dtype=F64)
    w[0, 0, 0] = 2.0
    loss, m = grao_loss(*case, 0.5, 0.6, is_weights=w)
    loss.backward()
    expected = torch.tensor([[[-1.6 / 4 * 2.0, -1.6 / 4, 0.0], [1.6 * 0.5 / 2, 0.0, 0.0]]], dtype=F64)
    torch.testing.assert_close(case[0].grad, expected)
    torch.testing.assert_close(case[2].grad, torch.full((1, 2), -(0.5 * 2.0 - 0.6 * 0.25) / 2, dtype=F64))
    assert math.isclose(float(m["jexp_mean"]), -1.5)
    # The value: Jexp of sample 0 becomes (2*(-1) + (-1)) / 2 = -1.5 inside the loss.
    j_exp, j_imit = torch.tensor([-1.5, -2.0], dtype=F64), -3.0
    per_i = torch.tensor([1.0, -0.5], dtype=F64) * j_exp * 1.6 + 0.5 * 2.0 * j_imit - 0.6 * torch.tensor([1.0, -0.5], dtype=F64) * j_imit
    assert math.isclose(loss.item(), float(-per_i.mean()))
    with pytest.raises(ValueError, match="is_weights"):
        grao_loss(*_hand_case(), 0.5, 0.6, is_weights=torch.ones(1, 2, 2, dtype=F64))
