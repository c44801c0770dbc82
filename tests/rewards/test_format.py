"""Format rewards on hand-written completions."""

from __future__ import annotations

import pytest

from rewards.format import answer_tag_format, completion_text, extract_answer_tag, think_answer_format


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>2+2 is 4</think><answer>4</answer>", 1.0),
        ("\n<think>a\nb</think>\nSo:\n<answer> 4 </answer>\n  ", 1.0),  # whitespace around and between
        ("<think></think><answer></answer>", 1.0),  # empty blocks are still the right layout
        ("<think>x</think><answer>4</answer> trailing words", 0.0),  # text after the answer
        ("preamble <think>x</think><answer>4</answer>", 0.0),  # text before the think block
        ("<answer>4</answer>", 0.0),  # no think block
        ("<think>x</think>", 0.0),  # no answer block
        ("<think>x</think><answer>4", 0.0),  # unclosed answer
        ("<answer>4</answer><think>x</think>", 0.0),  # wrong order
        ("<think>x</think><answer>1</answer><answer>2</answer>", 0.0),  # two answers
        ("<think><think>x</think></think><answer>4</answer>", 0.0),  # nested think
        ("<think>x</think><answer>1 <answer>2</answer>", 0.0),  # answer tag inside the answer
    ],
)
def test_think_answer_format(completion, expected):
    assert think_answer_format(["p"], [completion]) == [expected]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("The sum is <answer>4</answer>", 1.0),
        ("<answer>4</answer>\n", 1.0),
        ("<answer>   </answer>", 0.0),  # blank answer
        ("<answer>4</answer> and more", 0.0),
        ("no tags at all", 0.0),
        ("<answer>1</answer><answer>2</answer>", 0.0),
    ],
)
def test_answer_tag_format(completion, expected):
    assert answer_tag_format(["p"], [completion]) == [expected]


def test_conversational_completions_are_read_from_the_assistant_message():
    completion = [{"role": "assistant", "content": "<think>x</think><answer>4</answer>"}]
    assert think_answer_format([[{"role": "user", "content": "q"}]], [completion]) == [1.0]
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "ab"}]}]) == "ab"


def test_completion_text_rejects_other_types_in_one_line():
    with pytest.raises(TypeError, match="must be a str or a list") as info:
        completion_text(42)
    assert "\n" not in str(info.value)


def test_extract_answer_tag_takes_the_last_complete_block():
    assert extract_answer_tag("<answer>1</answer> then <answer> 2 </answer>") == "2"
    assert extract_answer_tag("<answer>unclosed") is None
