"""group_advantages against hand-computed values, including the spec's edge cases (ALGORITHMS.md 1, 7)."""

import math

import pytest
import torch

from align.algos import group_advantages


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def test_grpo_default_is_mean_over_bessel_std():
    # mean 2, std1 = sqrt(((1)^2 + 0 + 1^2) / 2) = 1
    adv = group_advantages(t([[1.0, 2.0, 3.0]]), eps=0.0)
    torch.testing.assert_close(adv, t([[-1.0, 0.0, 1.0]]))


def test_default_eps_is_added_to_std():
    # 0/1 rewards: mean 0.5, std1 = sqrt(4 * 0.25 / 3) = sqrt(1/3)
    adv = group_advantages(t([[1.0, 0.0, 0.0, 1.0]]))
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    torch.testing.assert_close(adv, t([[a, -a, -a, a]]), atol=1e-12, rtol=0)
    adv = group_advantages(t([[0.0, 2.0]]), eps=0.5)
    b = 1 / (math.sqrt(2) + 0.5)
    torch.testing.assert_close(adv, t([[-b, b]]))


def test_population_std_with_ddof_0():
    adv = group_advantages(t([[1.0, 2.0, 3.0]]), ddof=0, eps=0.0)
    s = math.sqrt(2 / 3)
    torch.testing.assert_close(adv, t([[-1 / s, 0.0, 1 / s]]))


def test_dr_grpo_no_std_scaling():
    adv = group_advantages(t([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 1.0, 1.0]]), scale="none")
    torch.testing.assert_close(adv, t([[0.5, -0.5, -0.5, 0.5], [1.5, -0.5, -0.5, -0.5]]))


def test_rloo_leave_one_out_baseline():
    # baselines: (2+3)/2, (1+3)/2, (1+2)/2
    adv = group_advantages(t([[1.0, 2.0, 3.0]]), baseline="loo", scale="none")
    torch.testing.assert_close(adv, t([[-1.5, 0.0, 1.5]]))


def test_no_baseline_only_scales():
    adv = group_advantages(t([[1.0, 3.0]]), baseline="none", scale="none")
    torch.testing.assert_close(adv, t([[1.0, 3.0]]))


def test_batch_std_scale():
    # batch of 4 rewards 1,3,0,0 after centring per group: group 1 -> [-1, 1]; batch mean 1,
    # var1 = (0 + 4 + 1 + 1) / 3 = 2
    adv = group_advantages(t([[1.0, 3.0], [0.0, 0.0]]), scale="batch", eps=0.0)
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(adv, t([[-r, r], [0.0, 0.0]]))


def test_invalid_members_are_zero_and_excluded_from_statistics():
    rewards = t([[1.0, float("nan"), 3.0, 100.0]])
    valid = torch.tensor([[True, False, True, False]])
    adv = group_advantages(rewards, valid, eps=0.0)
    r = 1 / math.sqrt(2)  # mean 2, std1 sqrt(2) over {1, 3}
    torch.testing.assert_close(adv, t([[-r, 0.0, r, 0.0]]))


@pytest.mark.parametrize("baseline", ["mean", "loo"])
def test_all_equal_rewards_give_exactly_zero(baseline):
    # 0.1 * 3 / 3 != 0.1 in floating point: without care this would be ~1e-11 / eps = 1e-5, not 0
    adv = group_advantages(t([[0.1, 0.1, 0.1], [0.7, 0.7, 0.7]]), baseline=baseline)
    assert torch.equal(adv, torch.zeros(2, 3, dtype=torch.float64))


def test_zero_std_is_zero_not_nan_even_with_eps_zero():
    adv = group_advantages(t([[2.0, 2.0]]), eps=0.0)
    assert torch.equal(adv, torch.zeros(1, 2, dtype=torch.float64))


def test_single_member_group_is_zero_and_warns():
    with pytest.warns(UserWarning, match="single valid completion"):
        adv = group_advantages(t([[5.0], [1.0]]))
    assert torch.equal(adv, torch.zeros(2, 1, dtype=torch.float64))
    valid = torch.tensor([[True, False, False], [True, True, True]])
    with pytest.warns(UserWarning):
        adv = group_advantages(t([[4.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), valid, eps=0.0)
    torch.testing.assert_close(adv, t([[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]]))


def test_single_member_group_raw_is_verl_convention():
    adv = group_advantages(t([[5.0], [-2.0]]), small_group="raw")
    torch.testing.assert_close(adv, t([[5.0], [-2.0]]))


def test_dtype_and_no_grad():
    rewards = torch.tensor([[1.0, 0.0]], requires_grad=True)
    adv = group_advantages(rewards)
    assert adv.dtype == torch.float32 and not adv.requires_grad
    assert group_advantages(rewards.double().detach()).dtype == torch.float64
    assert group_advantages(torch.tensor([[1, 0]])).dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rewards=torch.zeros(3)), r"rewards must be \[P,G\]"),
        (dict(rewards=torch.tensor([[1.0, float("nan")]])), "non-finite"),
        (dict(rewards=torch.zeros(1, 2), baseline="median"), "baseline='median'"),
        (dict(rewards=torch.zeros(1, 2), scale="max"), "scale='max'"),
        (dict(rewards=torch.zeros(1, 2), ddof=-1), "ddof"),
        (dict(rewards=torch.zeros(1, 2), valid=torch.ones(2, 1, dtype=torch.bool)), "valid has shape"),
    ],
)
def test_bad_input_one_line_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match) as err:
        group_advantages(**kwargs)
    assert "\n" not in str(err.value)
