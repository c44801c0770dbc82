"""GCPO Group Contrastive Masking and reward shaping (ALGORITHMS.md section 2), hand-computed."""

import pytest
import torch

from align.algos import gcpo_contrastive_mask, gcpo_rewards, group_advantages

T_, F_ = True, False


def test_mask_signs():
    acc = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]], dtype=torch.float32)
    aux = torch.tensor([[T_, T_, F_, F_], [T_, T_, F_, F_], [T_, F_, F_, T_]])
    # d = 1 - 0 -> +1 ; d = 0 - 1 -> -1 ; d = 0.5 - 0.5 = 0 -> 0
    torch.testing.assert_close(gcpo_contrastive_mask(acc, aux), torch.tensor([1.0, -1.0, 0.0]))


def test_d_exactly_eta_gives_zero_strict_inequality():
    # aux: mean acc 1; no aux: mean 0.5 -> d = 0.5 = eta exactly
    acc = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    aux = torch.tensor([[T_, T_, F_, F_]])
    assert float(gcpo_contrastive_mask(acc, aux, eps=0.5)) == 0.0
    assert float(gcpo_contrastive_mask(acc, aux, eps=0.49)) == 1.0
    # d = 11/20 - 10/20 = 0.05, which float arithmetic makes 0.05000000000000004: still a tie
    acc = torch.tensor([[1.0] * 11 + [0.0] * 9 + [1.0] * 10 + [0.0] * 10])
    aux = torch.tensor([[T_] * 20 + [F_] * 20])
    assert float(gcpo_contrastive_mask(acc, aux, eps=0.05)) == 0.0
    assert float(gcpo_contrastive_mask(acc, aux, eps=0.01)) == 1.0
    assert float(gcpo_contrastive_mask(1 - acc, aux, eps=0.05)) == 0.0  # d = -0.05


def test_empty_subgroup_gives_zero_and_g1():
    acc = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    aux = torch.tensor([[T_, T_, T_], [F_, F_, F_], [T_, F_, F_]])
    torch.testing.assert_close(gcpo_contrastive_mask(acc, aux), torch.tensor([0.0, 0.0, 1.0]))
    assert float(gcpo_contrastive_mask(torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool))) == 0.0


def test_mask_uses_valid_members_only():
    acc = torch.tensor([[1.0, 0.0, float("nan"), 1.0]])
    aux = torch.tensor([[T_, F_, F_, F_]])
    valid = torch.tensor([[T_, T_, F_, F_]])
    assert float(gcpo_contrastive_mask(acc, aux, valid=valid)) == 1.0  # 1 vs 0 over the valid two
    valid = torch.tensor([[T_, F_, F_, F_]])
    assert float(gcpo_contrastive_mask(acc, aux, valid=valid)) == 0.0  # no valid non-user left


def test_rewards_by_hand():
    acc = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    fmt = torch.tensor([[0.5, 0.0, 0.5, 0.5]])
    aux = torch.tensor([[T_, T_, F_, T_]])
    length = torch.tensor([[450, 1800, 0, 90]])
    # acc with aux 2/3, without 0 -> M = +1. R = acc + fmt + 0.5*aux + 0.5*min(L,900)/900
    r, m = gcpo_rewards(acc, fmt, aux, length)
    assert float(m) == 1.0
    torch.testing.assert_close(r, torch.tensor([[1 + 0.5 + 0.5 + 0.25, 1 + 0 + 0.5 + 0.5, 0 + 0.5 + 0 + 0, 0.5 + 0.5 + 0.05]]))
    r, _ = gcpo_rewards(acc, fmt, aux, length, gate_aux_on_correct=True, gate_len_on_correct=True)
    torch.testing.assert_close(r, torch.tensor([[2.25, 2.0, 0.5, 0.5]]))
    r, _ = gcpo_rewards(acc, fmt, aux, length, use_length=False, w_aux=1.0)
    torch.testing.assert_close(r, torch.tensor([[2.5, 2.0, 0.5, 1.5]]))


def test_negative_mask_penalises_construction_and_feeds_grpo():
    acc = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    aux = torch.tensor([[T_, T_, F_, F_]])
    zeros = torch.zeros(1, 4)
    r, m = gcpo_rewards(acc, zeros, aux, zeros, use_length=False)
    assert float(m) == -1.0
    torch.testing.assert_close(r, torch.tensor([[-0.5, -0.5, 1.0, 1.0]]))
    adv = group_advantages(r)
    assert (adv[0, :2] < 0).all() and (adv[0, 2:] > 0).all()


def test_invalid_members_get_zero_reward_and_errors():
    nan = float("nan")
    acc = torch.tensor([[1.0, nan]])
    r, _ = gcpo_rewards(acc, torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2),
                        valid=torch.tensor([[T_, F_]]))
    torch.testing.assert_close(r, torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="length has negative"):
        gcpo_rewards(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="fmt has shape"):
        gcpo_rewards(torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, 2), torch.zeros(1, 2))
