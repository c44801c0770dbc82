"""geometry_accuracy and aux_construction against hand-made cases."""

import pytest

from rewards import get_reward_function
from rewards.geometry import aux_construction, geometry_accuracy

PROMPT = [{"role": "user", "content": "Triangle ABC: A=35, B=65. Find the exterior angle at C."}]


def acc(completion, gold="80"):
    return geometry_accuracy([PROMPT], [completion], answer=[gold])[0]


def aux(completion, prompt=PROMPT):
    return aux_construction([prompt], [completion])[0]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>C=180-35-65</think><answer>80</answer>", 1.0),
        ("<think></think><answer>81</answer>", 1.0),  # 1.25% off: inside the 2% relative tolerance
        ("<think></think><answer>82</answer>", 0.0),  # 2.5% off
        ("<think></think><answer> x = 80° </answer>", 1.0),
        ("<think></think><answer>80 degrees</answer>", 1.0),
        ("<think></think><answer>eighty</answer>", 0.0),
        ("<think>C=80</think>", 0.0),  # no answer block
        ("<think></think><answer>80", 0.0),  # unclosed
        ("<answer>10</answer><answer>80</answer>", 1.0),  # the last answer block counts
    ],
)
def test_geometry_accuracy_cases(completion, expected):
    assert acc(completion) == expected


def test_geometry_accuracy_math_verify_and_chat_form():
    assert acc("<answer>$\\frac{1}{2}$</answer>", gold="0.5") == 1.0
    assert acc("<answer>$\\frac{1}{3}$</answer>", gold="0.5") == 0.0
    chat = [{"role": "assistant", "content": "<think></think><answer>80</answer>"}]
    assert acc(chat) == 1.0


def test_geometry_accuracy_missing_gold_and_column():
    assert geometry_accuracy([PROMPT], ["<answer>1</answer>"], answer=[None]) == [None]
    with pytest.raises(ValueError, match="column 'answer'"):
        geometry_accuracy([PROMPT], ["<answer>1</answer>"])


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think><aux>C=180-35-65=80</aux>x=180-80</think><answer>100</answer>", 1.0),
        ("<think><aux>C=180-A-B=80</aux>x=180-C</think><answer>100</answer>", 1.0),  # names bound by the prompt
        ("<think><aux>S=35+65</aux>x=S</think><answer>100</answer>", 1.0),  # no value written
        ("<think><aux>S=35+65=100; C=180-S=80</aux></think><answer>100</answer>", 1.0),  # later uses earlier
        ("<think><aux>S=35+65=100</aux><aux>C=180-S=80</aux></think><answer>100</answer>", 1.0),
        ("<think><aux>S=35+65=110</aux>x=S</think><answer>110</answer>", 0.0),  # wrong arithmetic
        ("<think><aux>C=180-A-D=80</aux></think><answer>100</answer>", 0.0),  # D is not known
        ("<think><aux>S=35+65=100</aux><aux>C=180-S=70</aux></think><answer>100</answer>", 0.0),  # one bad block
        ("<think><aux>35+65=100</aux></think><answer>100</answer>", 0.0),  # no name
        ("<think><aux>S=35+65=100=100</aux></think><answer>100</answer>", 0.0),
        ("<think><aux>S=35/0</aux></think><answer>1</answer>", 0.0),
        ("<think><aux>S=7/3=2.33</aux></think><answer>1</answer>", 1.0),  # rounded to the written precision
        ("<think><aux>S=7/3=2.4</aux></think><answer>1</answer>", 0.0),
        ("<think><aux>S=__import__('os')</aux></think><answer>1</answer>", 0.0),
        ("<think><aux>S=2**10=1024</aux></think><answer>1</answer>", 0.0),  # only + - * / ( )
        ("<think>x=35+65</think><answer>100</answer>", 0.0),  # no construction
        ("<think><aux>S=35+65=100</think><answer>100</answer>", 0.0),  # unclosed
        ("<think>x</think><aux>S=35+65=100</aux><answer>100</answer>", 0.0),  # outside think
        ("<aux>S=35+65=100</aux><answer>100</answer>", 0.0),  # no think block
        ("<think><aux></aux></think><answer>1</answer>", 0.0),
    ],
)
def test_aux_construction_cases(completion, expected):
    assert aux(completion) == expected


def test_aux_construction_plain_prompt_and_chat_completion():
    chat = [{"role": "assistant", "content": "<think><aux>C=180-A-B=80</aux></think><answer>100</answer>"}]
    assert aux(chat, prompt="Triangle ABC: A=35, B=65.") == 1.0
    assert aux(chat, prompt="Triangle ABC.") == 0.0


def test_registered_by_name():
    assert get_reward_function("geometry_accuracy") is geometry_accuracy
    assert get_reward_function("aux_construction") is aux_construction


def test_geometry_judge_correct_beats_wrong_then_shorter_wins():
    from rewards.geometry import geometry_judge

    ref = "<think>C=180-30-60</think><answer>90</answer>"
    completions = [
        "<think>C=180-90</think><answer>90</answer>",  # correct and shorter: better
        "<think>C=180-30-60</think><answer>90</answer>",  # the same length: tie
        "<think><aux>S=30+60=90</aux>C=180-90</think><answer>90</answer>",  # correct but longer: worse
        "<think>C=1</think><answer>80</answer>",  # wrong: worse, however short
    ]
    verdicts = geometry_judge([""] * 4, completions, reference=[ref] * 4, answer=["90"] * 4)
    assert verdicts == [1.0, 0.0, -1.0, -1.0]
    wrong_ref = "<think>x</think><answer>10</answer>"  # two wrong answers tie; a correct one beats a wrong reference
    assert geometry_judge(["", ""], [completions[3], completions[2]], reference=[wrong_ref] * 2, answer=["90"] * 2) == [0.0, 1.0]
