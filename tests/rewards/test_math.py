"""math_accuracy on hand-written completions: tags, \\boxed, whole text, letters, relaxed match, None."""

from __future__ import annotations

import pytest

from rewards.math import math_accuracy, math_accuracy_relaxed, score_answer


def score(completion: str, gold: str, **kwargs) -> float | None:
    return math_accuracy(["q"], [completion], answer=[gold], **kwargs)[0]


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        ("<think>6*2</think><answer>12</answer>", "12", 1.0),
        ("<think>..</think><answer>13</answer>", "12", 0.0),
        ("<answer>2\\sqrt{3}</answer>", "2\\sqrt{3}", 1.0),  # bare LaTeX in the tag is not cut to "2"
        ("<answer>2\\sqrt{3}</answer>", "2", 0.0),
        ("<answer>2*sqrt(3)</answer>", "2\\sqrt{3}", 1.0),  # plain-text expression
        ("<answer>0.5</answer>", "\\frac{1}{2}", 1.0),
        ("<answer>60^\\circ</answer>", "60", 1.0),
        ("<answer>x = 3</answer>", "3", 1.0),
        ("<answer>2*pi</answer>", "2\\pi", 1.0),  # plain-text pi is pi, not p*i
        ("<answer>4pi</answer>", "2\\pi", 0.0),
        ("<answer></answer>", "3", 0.0),  # empty answer
        ("so the result is \\boxed{7}, not 8", "7", 1.0),  # boxed beats the last number
        ("I computed 3 + 4 = 7", "7", 1.0),  # whole text, last expression
        ("no answer here", "7", 0.0),
        ("<answer>3</answer> and later \\boxed{5}", "3", 1.0),  # the tag beats \boxed
    ],
)
def test_math_accuracy(completion, gold, expected):
    assert score(completion, gold) == expected


def test_option_letters_count_when_the_gold_is_a_letter():
    assert score("<answer>B</answer>", "B") == 1.0
    assert score("<answer>(b).</answer>", "B") == 1.0
    assert score("<answer>C</answer>", "B") == 0.0


def test_answer_letter_column_accepts_the_letter_or_the_value():
    kwargs = {"answer_letter": ["B"]}
    assert score("<answer>B</answer>", "6", **kwargs) == 1.0
    assert score("<answer>6</answer>", "6", **kwargs) == 1.0
    assert score("<answer>A</answer>", "6", **kwargs) == 0.0
    assert score("<answer>B</answer>", "6") == 0.0  # without the column a letter is not the value


def test_relaxed_match_is_within_two_percent_relative():
    # 2*sqrt(3) = 3.4641...; 3.46 is 0.12% away, 3.3 is 4.7% away.
    assert score("<answer>3.46</answer>", "2\\sqrt{3}") == 0.0
    assert score("<answer>3.46</answer>", "2\\sqrt{3}", relative_tolerance=0.02) == 1.0
    assert score("<answer>3.3</answer>", "2\\sqrt{3}", relative_tolerance=0.02) == 0.0
    assert score_answer("<answer>101.9</answer>", "100", relative_tolerance=0.02) == 1.0
    assert score_answer("<answer>102.1</answer>", "100", relative_tolerance=0.02) == 0.0
    assert math_accuracy_relaxed(["q"], ["<answer>about 3.45 cm</answer>"], answer=["2\\sqrt{3}"]) == [1.0]


def test_relaxed_match_uses_one_value_not_any_number_listed():
    # GeometryZero accepts any number in the answer; listing candidates must not earn the reward here.
    assert score("<answer>1, 2, 3, 100, 50</answer>", "3", relative_tolerance=0.02) == 0.0


def test_missing_gold_gives_none_and_conversational_completions_work():
    completions = [[{"role": "assistant", "content": "<answer>4</answer>"}]] * 3
    assert math_accuracy([[{"role": "user", "content": "2+2?"}]] * 3, completions, answer=["4", None, " "]) == [1.0, None, None]


def test_missing_answer_column_names_the_fix():
    with pytest.raises(ValueError, match=r"needs an 'answer' column; the batch has: solution; set data.answer_column") as info:
        math_accuracy(["q"], ["<answer>1</answer>"], solution=["1"], completion_ids=[[1]], trainer_state=None)
    assert "\n" not in str(info.value)


def test_works_off_the_main_thread():
    # math-verify's own timeout needs the main thread; off it we must still score, not silently return 0.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(math_accuracy, ["q"], ["<answer>\\frac{1}{2}</answer>"], answer=["0.5"]).result()
    assert result == [1.0]
