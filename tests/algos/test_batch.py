"""GroupBatch and MicroBatch: the typed hand-offs validate their shapes with one-line errors."""

import pytest
import torch

from align.algos import GroupBatch, MicroBatch, Totals

P, G = 2, 3


def _batch(**overrides):
    fields = dict(
        prompt_ids=[[1, 2], [3]],
        completion_ids=[[5, 6, 7], [5], [], [8, 9], [9], [4, 4, 4, 4]],
        rewards=torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),
        valid=torch.tensor([[True, True, False], [True, True, True]]),
        components={"acc": torch.ones(P, G)},
    )
    fields.update(overrides)
    return GroupBatch(**fields)


def test_layout_and_defaults():
    batch = _batch()
    assert (batch.num_prompts, batch.group_size) == (P, G)
    assert batch.group_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert not batch.truncated.any() and batch.engine_logprobs is None
    assert [batch.loss_tokens(r) for r in range(6)] == [3, 1, 0, 2, 1, 4]
    masked = _batch(token_mask=[[1, 0, 1], [1], [], [0, 0], [1], [1, 1, 1, 1]])
    assert masked.loss_tokens(0) == 2 and masked.loss_tokens(3) == 0
    with_adv = batch.with_advantages(torch.zeros(P, G))
    assert with_adv.advantages is not None and batch.advantages is None


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(rewards=torch.zeros(6)), r"rewards must be a \[P,G\] tensor"),
        (dict(prompt_ids=[[1]]), "prompt_ids has 1 prompts"),
        (dict(completion_ids=[[1]] * 5), "completion_ids has 5 rows"),
        (dict(valid=torch.ones(P, G + 1, dtype=torch.bool)), r"valid must have shape \[2, 3\]"),
        (dict(components={"aux": torch.zeros(G)}), r"components\['aux'\] must have shape \[2, 3\]"),
        (dict(engine_logprobs=[[0.0]] * 6), r"engine_logprobs must have one value per completion token \(row 0"),
        (dict(answer_ids=[[1], []]), "prompt 1 has an empty reference answer"),
        (dict(answer_rewards=torch.zeros(3)), r"answer_rewards must have shape \[2\]"),
    ],
)
def test_shape_errors_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match) as err:
        _batch(**overrides)
    assert "\n" not in str(err.value)


def test_micro_batch_checks_and_regroups():
    totals = Totals(num_tokens=10, num_seqs=6, num_prompts=2, num_groups=2)
    logp = torch.zeros(6, 4)
    mb = MicroBatch(logp=logp, mask=torch.ones(6, 4), advantages=torch.zeros(6), rewards=torch.arange(6.0),
                    valid=torch.ones(6, dtype=torch.bool), group_size=3, totals=totals)
    assert mb.grouped(mb.rewards).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match=r"MicroBatch.ref_logp must have shape \[6, 4\]"):
        MicroBatch(logp=logp, mask=torch.ones(6, 4), advantages=torch.zeros(6), rewards=torch.zeros(6),
                   valid=torch.ones(6, dtype=torch.bool), group_size=3, totals=totals, ref_logp=torch.zeros(6, 3))
    with pytest.raises(ValueError, match="6 rows but 3 reference answers"):
        MicroBatch(logp=logp, mask=torch.ones(6, 4), advantages=torch.zeros(6), rewards=torch.zeros(6),
                   valid=torch.ones(6, dtype=torch.bool), group_size=3, totals=totals,
                   answer_logp=torch.zeros(3, 2), answer_mask=torch.ones(3, 2), answer_advantages=torch.zeros(3))
    odd = MicroBatch(logp=torch.zeros(4, 2), mask=torch.ones(4, 2), advantages=torch.zeros(4), rewards=torch.zeros(4),
                     valid=torch.ones(4, dtype=torch.bool), group_size=3, totals=totals)
    with pytest.raises(ValueError, match="not whole groups of 3"):
        odd.grouped(odd.rewards)
