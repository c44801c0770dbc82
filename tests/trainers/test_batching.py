"""Padding layout, token-budget micro-batches, the prompt stream and reward shaping."""

import torch

from align import algos
from align.models import load_model
from align.runtime.batching import completion_logits, pad_sequences, token_budget_groups
from align.sources.prompts import PromptStream
from align.sources.shaping import informative_groups, overlong_penalty


def test_padded_logprobs_equal_unpadded_forward(tiny_path):
    """Left-padded prompts + right-padded completions give each sequence exactly its own logprobs."""
    model = load_model(tiny_path)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    completions = [[20, 21, 22], [23, 24, 25, 26, 27], []]
    seqs = pad_sequences(prompts, completions, [0, 1, 2], pad_id=3)
    assert seqs.input_ids.shape == (3, 6 + 5)
    assert seqs.completion_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]
    assert seqs.position_ids[1].tolist()[4:8] == [0, 1, 2, 3]  # positions start at the first real token
    with torch.no_grad():
        logp = algos.token_logprobs(completion_logits(model, seqs), seqs.completion_ids)
        for row, (p, c) in enumerate(zip(prompts, completions)):
            if not c:
                continue
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : -1]
            expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None])[:, 0]
            torch.testing.assert_close(logp[row, : len(c)], expected, atol=1e-5, rtol=1e-5)


def test_token_budget_groups_respect_budget_and_cover_everything():
    lengths = [(10, 5), (3, 2), (10, 20), (4, 4), (40, 30)]
    groups = token_budget_groups(lengths, max_tokens=40)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    for g in groups:
        width = max(lengths[i][0] for i in g) + max(lengths[i][1] for i in g)
        assert len(g) == 1 or len(g) * width <= 40
    assert [4] in groups  # longer than the budget: alone
    assert token_budget_groups([(2, 2)] * 4, max_tokens=100) == [[0, 1, 2, 3]]


def test_prompt_stream_splits_ranks_and_resumes():
    data = [{"prompt": str(i)} for i in range(10)]
    whole = PromptStream(data, seed=1)
    ranks = [PromptStream(data, seed=1, rank=r, world_size=2) for r in range(2)]
    for _ in range(4):  # crosses an epoch boundary (10 rows, 4 per step)
        expected = whole.next_rows(4)
        got = ranks[0].next_rows(4) + ranks[1].next_rows(4)
        assert got == expected
    state = whole.state_dict()
    resumed = PromptStream(data, seed=1)
    resumed.load_state_dict(state)
    assert resumed.next_rows(6) == whole.next_rows(6)


def test_overlong_penalty_hand_computed():
    lengths = torch.tensor([10.0, 16.0, 18.0, 20.0])
    # max 20, buffer 4: free up to 16, then linear to -factor at 20
    assert overlong_penalty(lengths, 20, 4, factor=1.0).tolist() == [0.0, 0.0, -0.5, -1.0]
    assert overlong_penalty(lengths, 20, 0).tolist() == [0.0] * 4


def test_informative_groups_ignore_invalid_members():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [2.0, 5.0, 2.0]])
    valid = torch.tensor([[True] * 3, [True] * 3, [False, True, True], [True, False, True]])
    assert informative_groups(rewards, valid).tolist() == [False, True, False, False]


def test_token_budget_groups_keep_blocks_whole_within_budget():
    # 4 groups of 3 sequences (+1 reference answer each): (longest prompt, longest completion) per group
    lengths = [(5, 5), (5, 15), (2, 2), (10, 10)]
    sizes = [4, 4, 4, 4]
    groups = token_budget_groups(lengths, max_tokens=100, sizes=sizes)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3]
    for g in groups:
        width = max(lengths[i][0] for i in g) + max(lengths[i][1] for i in g)
        assert len(g) == 1 or sum(sizes[i] for i in g) * width <= 100
    assert [3] in groups and [1] in groups  # 4 rows x 20 tokens: one block fills the budget
    assert token_budget_groups(lengths, max_tokens=10_000, sizes=sizes) == [[1, 3, 0, 2]]  # stable sort by length
