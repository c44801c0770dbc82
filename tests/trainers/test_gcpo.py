"""GCPO's scoring: the contrastive mask and rewards from real reward functions, by hand."""

import pytest
import torch

from align.algorithms import load_config
from align.algorithms.gcpo import GCPO

PROMPT = [{"role": "user", "content": "Triangle ABC: A=30, B=130. Find angle C."}]
AUX_RIGHT = "<think><aux>S=30+130=160</aux>C=180-160</think><answer>20</answer>"
AUX_WRONG = "<think><aux>S=30+130=160</aux>C=180-150</think><answer>30</answer>"
DIRECT_RIGHT = "<think>C=180-30-130</think><answer>20</answer>"
DIRECT_WRONG = "<think>C=180-30-130</think><answer>40</answer>"
NO_FORMAT = "C is 20"


def score(groups: list[list[str]], lengths: list[list[int]], **overrides):
    cfg = load_config(["recipe=gcpo_geometry", "gcpo.l_max=10", "gcpo.use_length=true", *[f"{k}={v}" for k, v in overrides.items()]])
    algo = GCPO(cfg)
    g = len(groups[0])
    completions = [[{"role": "assistant", "content": c}] for group in groups for c in group]
    ids = [[7] * n for group in lengths for n in group]
    columns = {"answer": ["20"] * len(completions)}
    return algo, algo.score([PROMPT] * len(completions), completions, columns, ids, g)


def test_mask_signs_and_rewards_hand_computed():
    groups = [
        [AUX_RIGHT, AUX_RIGHT, DIRECT_WRONG, DIRECT_WRONG],  # aux helps: M = +1
        [AUX_WRONG, AUX_WRONG, DIRECT_RIGHT, DIRECT_RIGHT],  # aux hurts: M = -1
        [AUX_RIGHT, AUX_WRONG, AUX_RIGHT, AUX_WRONG],  # nobody went without aux: M = 0
        [DIRECT_RIGHT, NO_FORMAT, DIRECT_WRONG, DIRECT_RIGHT],  # nobody constructed: M = 0
    ]
    lengths = [[5, 10, 20, 0]] * 4
    algo, s = score(groups, lengths)
    length_term = 0.5 * torch.tensor([0.5, 1.0, 1.0, 0.0])  # w_len * min(L, 10) / 10
    expected = torch.stack([
        # acc + w_fmt * fmt (0.5) + M * w_aux * aux (0.5)
        torch.tensor([1 + 0.5 + 0.5, 1 + 0.5 + 0.5, 0 + 0.5, 0 + 0.5]),
        torch.tensor([0 + 0.5 - 0.5, 0 + 0.5 - 0.5, 1 + 0.5, 1 + 0.5]),
        torch.tensor([1.5, 0.5, 1.5, 0.5]),
        torch.tensor([1.5, 0.0, 0.5, 1.5]),
    ]) + length_term
    torch.testing.assert_close(s.rewards, expected)
    m = algo.batch_metrics(s)
    assert (m["gcpo/mask_pos"], m["gcpo/mask_neg"], m["gcpo/mask_zero"]) == (1, 1, 2)
    assert m["gcpo/aux_rate"] == pytest.approx(8 / 16)
    assert m["gcpo/acc_with_aux"] == pytest.approx(4 / 8)  # group 1: 2, group 2: 0, group 3: 2
    assert m["gcpo/acc_without_aux"] == pytest.approx(4 / 8)
    assert s.valid.all()


def test_gate_aux_on_correct_and_no_length():
    groups = [[AUX_RIGHT, AUX_RIGHT, DIRECT_WRONG, AUX_WRONG]]  # acc_aux 2/3, acc_noaux 0: M = +1
    _, s = score(groups, [[5, 5, 5, 5]], **{"gcpo.gate_aux_on_correct": "true", "gcpo.use_length": "false"})
    torch.testing.assert_close(s.rewards, torch.tensor([[2.0, 2.0, 0.5, 0.5]]))
