"""CISPO, SAPO and VESPO by hand: values and gradients worked out with `math`, not with the code under test."""

import math

import pytest
import torch

from align.algos import SURROGATES, grpo_loss
from align.algos.surrogates import cispo_token_loss, clipped_pg_token_loss, sapo_token_loss, vespo_token_loss

F64 = torch.float64


def _one_token(fn, ratio, adv, **kwargs):
    """(loss, d loss / d logp, info) for one token at `ratio` (old_logp = 0)."""
    logp = torch.tensor([[math.log(ratio)]], dtype=F64, requires_grad=True)
    loss, info = fn(logp, torch.zeros_like(logp), torch.tensor([adv], dtype=F64), mask=torch.ones_like(logp), **kwargs)
    loss.sum().backward()
    return float(loss.detach()), float(logp.grad), info


@pytest.mark.parametrize("ratio, adv, cap, clipped", [(1.5, 1.0, 5.0, False), (6.0, 1.0, 5.0, True),
                                                      (6.0, -1.0, 5.0, True), (0.3, -2.0, 5.0, False)])
def test_cispo_by_hand(ratio, adv, cap, clipped):
    loss, grad, info = _one_token(cispo_token_loss, ratio, adv, cispo_cap=cap)
    weight = min(ratio, cap)
    assert math.isclose(loss, -weight * adv * math.log(ratio), abs_tol=1e-12)
    assert math.isclose(grad, -weight * adv, abs_tol=1e-12)  # the weight is a constant: d/dlogp of -w A logp
    assert bool(info["clipped_high"]) == clipped


def test_cispo_keeps_the_gradient_ppo_clips_away():
    _, ppo_grad, _ = _one_token(clipped_pg_token_loss, 1.5, 1.0, eps_high=0.2)
    _, cispo_grad, _ = _one_token(cispo_token_loss, 1.5, 1.0, cispo_cap=1.2)
    assert ppo_grad == 0.0 and math.isclose(cispo_grad, -1.2)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("ratio, adv", [(1.0, 1.0), (2.0, 1.0), (2.0, -1.0), (0.5, -0.7), (1.3, 0.0)])
def test_sapo_by_hand(ratio, adv):
    tau_pos, tau_neg = 1.0, 1.05
    loss, grad, info = _one_token(sapo_token_loss, ratio, adv, sapo_tau_pos=tau_pos, sapo_tau_neg=tau_neg)
    tau = tau_pos if adv > 0 else tau_neg
    s = _sigmoid(tau * (ratio - 1))
    assert math.isclose(loss, -adv * 4 / tau * s, abs_tol=1e-12)
    # d/dlogp = d/drho * rho, and d sigmoid(tau (rho - 1)) / d rho = tau s (1 - s)
    assert math.isclose(grad, -adv * 4 * s * (1 - s) * ratio, abs_tol=1e-12)
    assert set(info) == {"ratio"}


def test_sapo_gate_decays_where_ppo_cuts_off():
    """Past the clip bound PPO's gradient is 0; SAPO's shrinks smoothly and more for a larger tau."""
    grads = [_one_token(sapo_token_loss, r, 1.0, sapo_tau_pos=2.0)[1] for r in (1.0, 1.3, 1.8, 3.0)]
    assert grads[0] < grads[1] < 0 or grads[1] < grads[0] < 0  # ratio 1: -A exactly, then a smooth change
    assert abs(grads[3]) < abs(grads[2]) < abs(grads[1])
    steep = _one_token(sapo_token_loss, 1.8, 1.0, sapo_tau_pos=4.0)[1]
    assert abs(steep) < abs(grads[2])


def _phi(w, k, lam):
    return math.exp(lam) * w**k * math.exp(-lam * w)


@pytest.mark.parametrize("log_ratios, adv", [([0.0, 0.0], 1.0), ([0.4, 0.29], 1.0), ([-0.3, -0.39], 1.0),
                                             ([0.4, 0.29], -1.0), ([1.5, 1.0], -0.5)])
def test_vespo_by_hand(log_ratios, adv):
    """Both tokens of a sequence get -phi(w) * A with w the product of their ratios; padding stays out."""
    logp = torch.tensor([log_ratios + [0.7]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    loss, info = vespo_token_loss(logp, torch.zeros_like(logp), torch.tensor([adv], dtype=F64), mask=mask)
    (loss * mask).sum().backward()
    k, lam = (2.0, 3.0) if adv >= 0 else (3.0, 2.0)
    w = math.exp(sum(log_ratios))
    phi = _phi(w, k, lam)
    for t in range(2):
        assert math.isclose(float(logp.grad[0, t]), -phi * adv, rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(float(loss.detach()[0, t]), -phi * adv * log_ratios[t], rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(float(info["ratio"][0, 0]), w, rel_tol=1e-12)


def test_vespo_takes_the_engine_weights_into_the_sequence_ratio():
    """is_weights enter w (log space, mask tokens only) and do not multiply the loss."""
    logp = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    weights = torch.tensor([[2.0, 1.0, 100.0]], dtype=F64)  # the padded 100 must not count
    loss, info = vespo_token_loss(logp, torch.zeros_like(logp), torch.tensor([1.0], dtype=F64), mask=mask, is_weights=weights)
    (loss * mask).sum().backward()
    assert math.isclose(float(info["ratio"][0, 0]), 2.0)
    assert math.isclose(float(logp.grad[0, 0]), -_phi(2.0, 2.0, 3.0), rel_tol=1e-12)


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_at_ratio_one_every_surrogate_is_the_plain_policy_gradient(name):
    """pi = pi_old (one update per batch): each surrogate's gradient is -A / N_tok, as PPO's clip.
    That is why their options are inert with train.updates_per_batch=1 (config/inert.py)."""
    logp = -torch.rand(3, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    leaf = logp.clone().requires_grad_()
    loss, _ = grpo_loss(leaf, logp, adv, mask, surrogate=name, agg="token_mean")
    loss.backward()
    expected = -adv[:, None].expand_as(logp) * mask / mask.sum()
    torch.testing.assert_close(leaf.grad, expected)


def test_an_option_the_surrogate_does_not_read_is_an_error():
    logp = torch.zeros(1, 2, dtype=F64)
    with pytest.raises(ValueError, match="surrogate='sapo' does not read cispo_cap"):
        grpo_loss(logp, logp, torch.ones(1, dtype=F64), torch.ones(1, 2), surrogate="sapo",
                  surrogate_options={"cispo_cap": 2.0})


@pytest.mark.parametrize("fn, kwargs, match", [
    (cispo_token_loss, {"cispo_cap": 0.0}, "cispo_cap"),
    (sapo_token_loss, {"sapo_tau_neg": -1.0}, "sapo_tau_neg"),
    (vespo_token_loss, {"vespo_lambda_pos": 0.0}, "vespo_lambda_pos"),
])
def test_bad_surrogate_options_name_themselves(fn, kwargs, match):
    logp = torch.zeros(1, 2, dtype=F64)
    with pytest.raises(ValueError, match=match):
        fn(logp, logp, torch.ones(1, dtype=F64), mask=torch.ones(1, 2), **kwargs)
