"""SALT step advantages on a trajectory graph (ALGORITHMS.md section 5), hand-computed for each history setting."""

import pytest
import torch

from align.algos import group_advantages, salt_step_advantages, steps_to_tokens

# Three trajectories of one task. s0 -a-> s1 is shared by all; then they diverge and re-merge at (s2, c).
STEPS = [
    [("s0", "a"), ("s1", "b"), ("s2", "c")],
    [("s0", "a"), ("s1", "x"), ("s2", "c")],
    [("s0", "a"), ("s1", "b"), ("s3", "d")],
]
ADV = [1.0, -2.0, 1.0]  # mean 0, as from a mean-centred estimator


def test_history_zero_merges_on_state_and_action():
    out = salt_step_advantages(ADV, STEPS, history=0)
    shared = 0.0  # edge used by all three: mean of A_i
    b = (1.0 + 1.0) / 2  # (s1, b): trajectories 0 and 2
    c = (1.0 - 2.0) / 2  # (s2, c): reached after different actions, merged at h = 0
    assert out == [[shared, b, c], [shared, -2.0, c], [shared, b, 1.0]]


def test_history_one_and_prefix_tree():
    # h = 1: (s2, c) after (s1, b) differs from (s2, c) after (s1, x); (s1, b) after (s0, a) is shared by 0 and 2
    out = salt_step_advantages(ADV, STEPS, history=1)
    assert out == [[0.0, 1.0, 1.0], [0.0, -2.0, -2.0], [0.0, 1.0, 1.0]]
    assert salt_step_advantages(ADV, STEPS, history=None) == out  # same here: prefixes of length <= 2
    # with a longer trajectory h = 1 re-merges a suffix that the prefix tree keeps apart
    steps = [
        [("s0", "a"), ("s1", "b"), ("s2", "c"), ("s3", "d")],
        [("s0", "z"), ("s1", "b"), ("s2", "c"), ("s3", "d")],
    ]
    adv = [1.0, -1.0]
    assert salt_step_advantages(adv, steps, history=1) == [[1.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0]]
    assert salt_step_advantages(adv, steps, history=None) == [[1.0] * 4, [-1.0] * 4]
    assert salt_step_advantages(adv, steps, history=0) == [[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]


def test_edge_by_one_keeps_its_advantage_and_magnitudes_are_bounded():
    g = torch.Generator().manual_seed(0)
    adv = group_advantages(torch.rand(1, 6, generator=g))[0]
    steps = [[("s", int(torch.randint(0, 2, (1,), generator=g))) for _ in range(4)] for _ in range(6)]
    steps[0].append(("unique", "only-me"))
    out = salt_step_advantages(adv, steps)
    assert out[0][-1] == pytest.approx(float(adv[0]))
    assert max(abs(v) for row in out for v in row) <= float(adv.abs().max()) + 1e-9


def test_repeat_visits_dedup_or_multiset():
    steps = [[("s", "loop"), ("s", "loop"), ("s", "loop")], [("s", "loop")]]
    # dedup: edge mean over trajectories = (3 + (-1)) / 2; multiset: over visits = (3*3 - 1) / 4
    assert salt_step_advantages([3.0, -1.0], steps) == [[1.0] * 3, [1.0]]
    assert salt_step_advantages([3.0, -1.0], steps, dedup=False) == [[2.0] * 3, [2.0]]


def test_equal_outcomes_g1_and_empty_trajectory():
    rewards = torch.tensor([[1.0, 1.0, 1.0]])
    adv = group_advantages(rewards)[0]
    assert salt_step_advantages(adv, STEPS) == [[0.0] * 3] * 3
    assert salt_step_advantages([0.0], [[("s", "a")]]) == [[0.0]]
    assert salt_step_advantages([1.0, -1.0], [[], [("s", "a")]]) == [[], [-1.0]]


def test_errors():
    with pytest.raises(ValueError, match="traj_adv has 2 entries but steps has 3"):
        salt_step_advantages([0.0, 1.0], STEPS)
    with pytest.raises(ValueError, match="history"):
        salt_step_advantages(ADV, STEPS, history=-1)


def test_steps_to_tokens():
    step_adv = [[0.5, -1.0], [2.0]]
    step_ids = torch.tensor([[-1, 0, 0, -1, 1, 1], [-1, -1, 0, 0, -1, -1]])
    out = steps_to_tokens(step_adv, step_ids)
    torch.testing.assert_close(
        out, torch.tensor([[0.0, 0.5, 0.5, 0.0, -1.0, -1.0], [0.0, 0.0, 2.0, 2.0, 0.0, 0.0]])
    )
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"step_ids row 1 has ids outside \[-1, 0\]"):
        steps_to_tokens(step_adv, torch.tensor([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="step_adv has 2 trajectories but step_ids has 1 rows"):
        steps_to_tokens(step_adv, torch.zeros(1, 2, dtype=torch.long))


def test_graph_stats_count_nodes_edges_merges_and_sign_flips():
    from align.algos import salt_graph_stats

    # A: (s0,a) (s1,b) wins; B: (s0,a) (s1,c) loses; C: (s2,a) loses.  A = [+2, -1, -1]
    steps = [[("s0", "a"), ("s1", "b")], [("s0", "a"), ("s1", "c")], [("s2", "a")]]
    adv = [2.0, -1.0, -1.0]
    step_adv = salt_step_advantages(adv, steps)
    assert step_adv[1][0] == 0.5  # B's first step is shared with the winner: its sign flips
    stats = salt_graph_stats(adv, steps, step_adv)
    assert stats == {"nodes": 3.0, "edges": 4.0, "steps": 5.0, "merged_steps": 2.0, "sign_flips": 1.0, "signed_steps": 5.0}
    # a prefix tree (history None) cannot merge more than the graph does
    assert salt_graph_stats(adv, steps, salt_step_advantages(adv, steps, history=None), history=None)["merged_steps"] == 2.0
