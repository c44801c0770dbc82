from __future__ import annotations

import pytest

from rewards import get_reward_function
from rewards.word_problems import extract_final_number


@pytest.mark.parametrize("text, value", [
    ("3 + 5 = 8. He has 8 apples.", 8.0),
    ("The answer is \\boxed{12}. Check: 7 + 5 = 12, or 13?", 12.0),   # the box wins over later numbers
    ("<answer>1,200</answer> then 5", 1200.0),
    ("\\boxed{42} and later \\boxed{43}", 43.0),                       # the last box
    ("\\boxed{x}", None),                                             # a box without a number: no answer
    ("he has -4 dollars", -4.0),
    ("no digits at all", None),
    ("\\boxed{15", 15.0),                                             # unclosed box: last number of the text
])
def test_extract_final_number(text, value):
    assert extract_final_number(text) == value


def test_final_number_reward_scores_against_the_answer_column():
    fn = get_reward_function("final_number")
    completions = ["so \\boxed{8}", [{"role": "assistant", "content": "8.0 apples"}], "7", "\\boxed{}"]
    assert fn([None] * 4, completions, answer=["8", "8", "8", "8"]) == [1.0, 1.0, 0.0, 0.0]
    assert fn([None], ["8"], answer=[""]) == [None]
    with pytest.raises(ValueError, match="answer"):
        fn([None], ["8"])
