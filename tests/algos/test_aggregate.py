"""aggregate and seq_logprob on hand-computed cases (ALGORITHMS.md section 6)."""

import pytest
import torch

from align.algos import aggregate, seq_logprob

# Row 0: two real tokens (1, 2) and a padded 3; row 1: an EMPTY completion (all padding, even NaN).
LOSS = torch.tensor([[1.0, 2.0, 3.0], [5.0, float("nan"), 5.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize(
    "mode, kwargs, expected",
    [
        ("token_mean", {}, 3 / 2),  # (1+2) / 2 tokens
        ("seq_mean_token_mean", {}, (3 / 2 + 0) / 2),  # the empty completion still counts as a sequence
        ("seq_mean_token_sum", {}, 3 / 2),
        ("seq_sum_const", {"const_len": 4}, 3 / (2 * 4)),
        # global normalisers replace the local counts
        ("token_mean", {"num_tokens": 6}, 3 / 6),
        ("seq_mean_token_mean", {"num_seqs": 5}, 1.5 / 5),
        ("seq_mean_token_sum", {"num_seqs": 3, "num_tokens": 99}, 3 / 3),
        ("seq_sum_const", {"const_len": 4, "num_seqs": 3}, 3 / 12),
    ],
)
def test_modes_by_hand(mode, kwargs, expected):
    out = aggregate(LOSS, MASK, mode, **kwargs)
    assert out.dim() == 0 and torch.isfinite(out)
    assert abs(float(out) - expected) < 1e-12


def test_bool_mask_and_empty_batch():
    assert float(aggregate(LOSS, MASK.bool(), "token_mean")) == 1.5
    empty = torch.zeros(0, 3, requires_grad=True)
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum"):
        out = aggregate(empty, torch.zeros(0, 3), mode)
        assert float(out.detach()) == 0.0
        out.backward()


def test_seq_mean_token_mean_gradient_is_one_over_length_times_batch():
    loss = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    aggregate(loss, mask, "seq_mean_token_mean").backward()
    expected = torch.tensor([[1 / 8] * 4, [1 / 2, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(loss.grad, expected)


def test_errors_are_one_line():
    with pytest.raises(ValueError, match="const_len") as err:
        aggregate(LOSS, MASK, "seq_sum_const")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="mode='mean'"):
        aggregate(LOSS, MASK, "mean")
    with pytest.raises(ValueError, match="mask has shape"):
        aggregate(LOSS, MASK[:, :2], "token_mean")
    with pytest.raises(ValueError, match=r"\[B,T\]"):
        aggregate(LOSS[0], MASK[0], "token_mean")


def test_seq_logprob_sum_mean_and_empty():
    logp = torch.tensor([[-1.0, -2.0, -7.0], [-4.0, -4.0, -4.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    torch.testing.assert_close(seq_logprob(logp, mask), torch.tensor([-3.0, 0.0]))
    torch.testing.assert_close(seq_logprob(logp, mask, "mean"), torch.tensor([-1.5, 0.0]))
    with pytest.raises(ValueError, match="reduce='max'"):
        seq_logprob(logp, mask, "max")
