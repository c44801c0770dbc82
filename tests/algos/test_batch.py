"""GroupBatch: shape validation, loss mask / counts, flatten layout, and a GRPO step through it."""

import pytest
import torch

from align.algos import GroupBatch, group_advantages, grpo_loss

P, G, T = 2, 3, 4


def _batch(**overrides):
    mask = torch.ones(P, G, T, dtype=torch.long)
    mask[0, 1, 2:] = 0
    mask[1, 2] = 0  # an empty (but valid) completion
    fields = dict(
        rewards=torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),
        mask=mask,
        valid=torch.tensor([[True, True, False], [True, True, True]]),
        old_logp=torch.full((P, G, T), -1.0),
        components={"acc": torch.ones(P, G)},
    )
    fields.update(overrides)
    return GroupBatch(**fields)


def test_counts_and_loss_mask():
    batch = _batch()
    assert (batch.num_prompts, batch.group_size, batch.max_len) == (P, G, T)
    # 24 tokens - 2 (short completion) - 4 (empty completion) - 4 (invalid member [0,2])
    assert batch.num_tokens() == 14
    assert batch.num_seqs() == 5
    assert not batch.loss_mask()[0, 2].any()


def test_flatten_is_completion_major():
    flat = _batch().flatten()
    assert flat["mask"].shape == (P * G, T) and flat["old_logp"].shape == (P * G, T)
    assert flat["rewards"].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert flat["valid"].tolist() == [True, True, False, True, True, True]
    assert flat["acc"].shape == (P * G,)
    assert int(flat["loss_mask"].sum()) == 14 and "ref_logp" not in flat


def test_default_valid_and_to():
    batch = GroupBatch(rewards=torch.zeros(1, 2), mask=torch.ones(1, 2, 3))
    assert batch.valid.all() and batch.num_seqs() == 2
    moved = batch.to("cpu")
    assert moved is not batch and torch.equal(moved.mask, batch.mask)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(rewards=torch.zeros(6)), r"rewards must be \[P,G\]"),
        (dict(mask=torch.ones(P, G)), r"mask must be \[P,G,T\]"),
        (dict(old_logp=torch.zeros(P, G, T + 1)), r"old_logp must have shape \[2, 3, 4\]"),
        (dict(components={"aux": torch.zeros(G)}), r"components\['aux'\] must have shape \[2, 3\]"),
        (dict(steps=[[[]] * G]), "steps must be P=2 lists of G=3"),
        (dict(logp_y=torch.zeros(P, 5)), "both logp_y and mask_y"),
        (dict(logp_y=torch.zeros(P, 5), mask_y=torch.ones(P, 4)), r"mask_y must have shape \[2, 5\]"),
    ],
)
def test_shape_errors_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match) as err:
        _batch(**overrides)
    assert "\n" not in str(err.value)


def test_grpo_step_through_the_batch_matches_direct_call():
    batch = _batch()
    adv = group_advantages(batch.rewards, batch.valid)
    flat = batch.flatten()
    logp = flat["old_logp"].clone().requires_grad_()
    loss, _ = grpo_loss(logp, flat["old_logp"], adv.reshape(-1), flat["loss_mask"], agg="token_mean",
                        num_tokens=batch.num_tokens())
    loss.backward()
    # at ratio 1, d loss / d logp = -A / N_tok on loss tokens, 0 on the invalid member's tokens
    expected = (-adv.reshape(-1, 1) / 14) * flat["loss_mask"]
    torch.testing.assert_close(logp.grad, expected)
