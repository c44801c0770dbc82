"""Length reward: min(L, l_max) / l_max from completion_ids."""

from __future__ import annotations

import pytest

from rewards.length import DEFAULT_L_MAX, length_reward, make_length_reward


def test_length_reward_hand_computed():
    ids = [[1] * 0, [1] * 450, [1] * 900, [1] * 2000]
    assert DEFAULT_L_MAX == 900
    assert length_reward(["p"] * 4, ["c"] * 4, completion_ids=ids) == [0.0, 0.5, 1.0, 1.0]
    assert length_reward(["p"] * 2, ["c"] * 2, completion_ids=[[0] * 3, [0] * 10], l_max=4) == [0.75, 1.0]


def test_counts_tokens_not_characters():
    # One token per id, whatever the text says.
    assert length_reward(["p"], ["a very long completion text"], completion_ids=[[5, 6]], l_max=10) == [0.2]


def test_factory_binds_its_cap_and_names_itself():
    capped = make_length_reward(8)
    assert capped.__name__ == "length_reward_8"
    assert capped(prompts=["p"], completions=["c"], completion_ids=[[1, 2]]) == [0.25]


@pytest.mark.parametrize("l_max", [0, -3, 2.5, True])
def test_bad_l_max_is_rejected(l_max):
    with pytest.raises(ValueError, match="l_max must be a positive int"):
        length_reward(["p"], ["c"], completion_ids=[[1]], l_max=l_max)


def test_missing_completion_ids_is_a_clear_error():
    with pytest.raises(ValueError, match="needs `completion_ids`"):
        length_reward(["p"], ["c"])
