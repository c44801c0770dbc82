"""KL estimators: values and gradients (ALGORITHMS.md 1: dk1 = 1, dk2 = d, dk3 = 1 - exp(-d)), and KL in the reward."""

import math

import pytest
import torch

from align.algos import kl_estimate, kl_penalty_rewards

D = torch.tensor([-1.0, -0.3, 0.0, 0.5, 2.0], dtype=torch.float64)


def _value_and_grad(kind, d=D, clamp=None):
    ref = torch.zeros_like(d)
    logp = d.clone().requires_grad_()
    kl = kl_estimate(logp, ref, kind=kind, clamp=clamp)
    kl.sum().backward()
    return kl.detach(), logp.grad


def test_k1_value_and_gradient():
    value, grad = _value_and_grad("k1")
    torch.testing.assert_close(value, D)
    torch.testing.assert_close(grad, torch.ones_like(D))


def test_k2_value_and_gradient():
    value, grad = _value_and_grad("k2")
    torch.testing.assert_close(value, D**2 / 2)
    torch.testing.assert_close(grad, D)


def test_k3_value_gradient_and_nonnegative():
    value, grad = _value_and_grad("k3")
    torch.testing.assert_close(value, torch.exp(-D) - 1 + D)
    torch.testing.assert_close(grad, 1 - torch.exp(-D))
    assert (value >= 0).all()
    # hand value at d = 2: e^-2 - 1 + 2
    assert math.isclose(float(value[-1]), math.exp(-2) + 1, rel_tol=1e-12)


def test_k3_plus_has_k3_value_and_k2_gradient():
    value, grad = _value_and_grad("k3+")
    torch.testing.assert_close(value, torch.exp(-D) - 1 + D)
    torch.testing.assert_close(grad, D)


def test_ref_logp_is_a_constant():
    ref = torch.tensor([0.2, -0.1], requires_grad=True)
    logp = torch.tensor([0.0, 0.0], requires_grad=True)
    kl_estimate(logp, ref).sum().backward()
    assert ref.grad is None and logp.grad is not None


def test_clamp_bounds_value_and_stops_gradient_beyond():
    d = torch.tensor([-20.0, -1.0], dtype=torch.float64)
    value, grad = _value_and_grad("k3", d, clamp=10.0)
    assert float(value[0]) == 10.0 and float(grad[0]) == 0.0
    assert math.isclose(float(value[1]), math.e - 2, rel_tol=1e-12)  # e^1 - 1 + (-1), inside the clamp
    unclamped, _ = _value_and_grad("k3", d, clamp=None)
    assert float(unclamped[0]) > 1e8  # exp(20) - 21
    k1, _ = _value_and_grad("k1", torch.tensor([-30.0, 30.0]), clamp=10.0)
    torch.testing.assert_close(k1, torch.tensor([-10.0, 10.0]))


def test_bad_kind_and_shapes():
    with pytest.raises(ValueError, match="kind='k4'"):
        kl_estimate(torch.zeros(2), torch.zeros(2), kind="k4")
    with pytest.raises(ValueError, match="ref_logp has shape"):
        kl_estimate(torch.zeros(2), torch.zeros(3))


def test_kl_penalty_rewards_subtracts_beta_times_summed_k1_over_mask():
    rewards = torch.tensor([[1.0, 0.0]])
    logp = torch.tensor([[[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]]])
    ref = torch.tensor([[[-1.5, -1.0, 0.0], [-0.5, -1.0, -0.5]]])
    mask = torch.tensor([[[1, 1, 0], [1, 1, 1]]])
    # completion 0: k1 = 0.5 + (-1.0) = -0.5 (third token masked); completion 1: 0 + 0.5 + 0 = 0.5
    out = kl_penalty_rewards(rewards, logp, ref, mask, beta=0.1)
    torch.testing.assert_close(out, torch.tensor([[1.0 + 0.05, 0.0 - 0.05]]))
    with pytest.raises(ValueError, match="trailing token dimension"):
        kl_penalty_rewards(rewards, logp[0], ref[0], mask[0], beta=0.1)
