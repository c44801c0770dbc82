"""CoPG squared contrastive loss (ALGORITHMS.md section 4): hand cases, the leave-one-out gradient identity, IPO."""

import itertools
import math

import torch

from align.algos import copg_loss

F64 = torch.float64


def test_group_of_three_by_hand():
    # log pi = log pi_ref -> Rb = R = [1, 0, 0]; sum_{i<j} (Rb_i - Rb_j)^2 = 1 + 1 + 0 = 2; / (k-1) = 1
    seq = torch.tensor([[-5.0, -3.0, -1.0]], dtype=F64)
    loss, metrics = copg_loss(seq, seq.clone(), torch.tensor([[1.0, 0.0, 0.0]], dtype=F64))
    assert math.isclose(float(loss.detach()), 1.0)
    assert float(metrics["num_groups"]) == 1 and math.isclose(float(metrics["reg_reward_mean"]), 1 / 3)


def test_pairwise_definition_with_kl_term():
    g = torch.Generator().manual_seed(0)
    seq, ref, r = (torch.randn(3, 4, generator=g, dtype=F64) for _ in range(3))
    beta = 0.3
    loss, _ = copg_loss(seq, ref, r, beta=beta)
    rb = r - beta * (seq - ref)
    per_prompt = [sum((rb[p, i] - rb[p, j]) ** 2 for i, j in itertools.combinations(range(4), 2)) / 3 for p in range(3)]
    assert math.isclose(float(loss.detach()), float(sum(per_prompt) / 3), rel_tol=1e-12)


def test_gradient_is_reinforce_with_leave_one_out_baseline():
    g = torch.Generator().manual_seed(1)
    seq = torch.randn(2, 5, generator=g, dtype=F64).requires_grad_()
    ref = torch.randn(2, 5, generator=g, dtype=F64, requires_grad=True)
    r = torch.randn(2, 5, generator=g, dtype=F64, requires_grad=True)
    beta, k = 0.2, 5
    loss, _ = copg_loss(seq, ref, r, beta=beta)
    loss.backward()
    rb = (r - beta * (seq - ref)).detach()
    # per group dl/dlog pi_i = -2 beta k/(k-1) (Rb_i - mean Rb); the loss averages 2 groups
    expected = -2 * beta * k / (k - 1) * (rb - rb.mean(1, keepdim=True)) / 2
    torch.testing.assert_close(seq.grad, expected)
    assert ref.grad is None and r.grad is None


def test_ipo_special_case():
    beta = 0.25
    seq = torch.tensor([[-3.0, -4.0]], dtype=F64)
    ref = torch.tensor([[-3.5, -3.0]], dtype=F64)
    loss, _ = copg_loss(seq, ref, torch.tensor([[0.5, 0.0]], dtype=F64), beta=beta)
    h = (-3.0 + 3.5) - (-4.0 + 3.0)
    assert math.isclose(float(loss.detach()), beta**2 * (h - 1 / (2 * beta)) ** 2, rel_tol=1e-12)


def test_small_groups_excluded_and_equal_rb_gives_zero():
    seq = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]], dtype=F64, requires_grad=True)
    r = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=F64)
    valid = torch.tensor([[True, True], [True, False]])
    loss, metrics = copg_loss(seq, seq.detach(), r, valid=valid)
    assert math.isclose(float(loss.detach()), 1.0) and float(metrics["num_groups"]) == 1  # only prompt 0 counts
    loss.backward()
    assert seq.grad[1].abs().sum() == 0
    none_left, _ = copg_loss(seq, seq.detach(), r, valid=torch.tensor([[True, False], [False, False]]))
    assert float(none_left.detach()) == 0.0 and none_left.requires_grad
    # equal Rb: R - beta*log_ratio identical across the group
    seq2 = torch.tensor([[0.0, 1.0]], dtype=F64, requires_grad=True)
    tie, _ = copg_loss(seq2, torch.zeros(1, 2, dtype=F64), torch.tensor([[0.0, 0.1]], dtype=F64), beta=0.1)
    tie.backward()
    assert abs(float(tie.detach())) < 1e-30 and seq2.grad.abs().max() < 1e-15


def test_num_groups_makes_shards_additive():
    g = torch.Generator().manual_seed(2)
    seq, ref, r = (torch.randn(5, 3, generator=g, dtype=F64) for _ in range(3))
    whole, _ = copg_loss(seq, ref, r)
    parts = sum(copg_loss(seq[s], ref[s], r[s], num_groups=5)[0] for s in (slice(0, 2), slice(2, 5)))
    torch.testing.assert_close(parts, whole)
