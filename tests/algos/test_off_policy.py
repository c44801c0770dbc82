"""off_policy_terms: pi_old and the per-token weight for samples from an older policy (ALGORITHMS.md 9)."""

import math

import pytest
import torch

from align import algos


def _logs(*ps):
    return torch.tensor([[math.log(p) for p in ps]], dtype=torch.float64)


def test_decoupled_keeps_the_current_policy_as_pi_old_and_truncates_current_over_behaviour():
    current, behaviour = _logs(0.5, 0.2, 0.3), _logs(0.25, 0.4, 0.3)
    old, weights = algos.off_policy_terms("decoupled", current, behaviour, cap=1.5)
    assert torch.equal(old, current)
    # 0.5/0.25 = 2 -> capped at 1.5; 0.2/0.4 = 0.5; equal -> 1
    assert torch.allclose(weights, torch.tensor([[1.5, 0.5, 1.0]], dtype=torch.float64))
    assert not old.requires_grad and not weights.requires_grad


def test_decoupled_without_a_cap_has_no_weight():
    current = _logs(0.5)
    assert algos.off_policy_terms("decoupled", current, _logs(0.25), cap=None)[1] is None


def test_bypass_takes_the_behaviour_policy_as_pi_old_and_falls_back_where_the_engine_had_no_score():
    current, behaviour = _logs(0.5, 0.2), _logs(0.25, 0.4)
    behaviour[0, 1] = float("nan")
    old, weights = algos.off_policy_terms("bypass", current, behaviour, cap=2.0)
    assert weights is None
    assert old[0, 0].item() == pytest.approx(math.log(0.25)) and old[0, 1].item() == pytest.approx(math.log(0.2))


def _loss_and_grad(correction, current, behaviour, adv):
    logp = current.clone().requires_grad_(True)
    old, weights = algos.off_policy_terms(correction, current, behaviour, cap=2.0)
    mask = torch.ones_like(current)
    loss, _ = algos.grpo_loss(logp, old, adv, mask, is_weights=weights, agg="token_mean")
    loss.backward()
    return loss.detach(), logp.grad


def test_on_policy_samples_reduce_both_corrections_to_the_synchronous_loss_and_gradient():
    current = _logs(0.5, 0.2, 0.7, 0.1)
    adv = torch.tensor([[1.0, -1.0, 0.5, 2.0]], dtype=torch.float64)
    plain_logp = current.clone().requires_grad_(True)
    plain, _ = algos.grpo_loss(plain_logp, current.clone(), adv, torch.ones_like(current), agg="token_mean")
    plain.backward()
    for correction in ("decoupled", "bypass"):
        loss, grad = _loss_and_grad(correction, current, current.clone(), adv)
        assert torch.equal(loss, plain.detach()) and torch.equal(grad, plain_logp.grad), correction


def test_a_stale_token_is_clipped_by_bypass_and_reweighted_by_decoupled():
    # The policy has moved since the sample: pi_current / mu = 0.6 / 0.3 = 2 for a positive advantage.
    current, behaviour, adv = _logs(0.6), _logs(0.3), torch.tensor([[1.0]], dtype=torch.float64)
    _, bypass_grad = _loss_and_grad("bypass", current, behaviour, adv)
    _, decoupled_grad = _loss_and_grad("decoupled", current, behaviour, adv)
    # bypass: the ratio pi_theta / mu = 2 > 1 + eps: clipped, no gradient.
    assert bypass_grad.item() == 0.0
    # decoupled: ratio pi_theta / pi_current = 1 (inside the clip), d(-w * ratio * A)/dlogp = -w * A, w = min(2, cap=2).
    assert decoupled_grad.item() == pytest.approx(-2.0)


def test_an_unknown_correction_is_named():
    with pytest.raises(ValueError, match="decoupled or bypass"):
        algos.off_policy_terms("none", _logs(0.5), _logs(0.5), cap=2.0)
