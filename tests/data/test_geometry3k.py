"""Geometry3K-style loading from the fixture, field-name variants, and the round trip through math_accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.data import DatasetSourceError, load_prompt_dataset
from align.data.geometry3k import INSTRUCTION, format_geometry3k_example
from rewards.math import math_accuracy

FIXTURE = Path(__file__).parent / "fixtures" / "geometry3k_small.jsonl"


@pytest.fixture(scope="module")
def geometry3k(tmp_path_factory):
    return load_prompt_dataset(f"geometry3k:{FIXTURE}", cache_dir=str(tmp_path_factory.mktemp("hf-cache")))


def test_fixture_rows_map_to_prompt_answer_letter(geometry3k):
    assert len(geometry3k) == 6
    assert set(geometry3k.column_names) == {"prompt", "answer", "answer_letter", "choices", "id", "source"}
    assert geometry3k["id"] == ["2", "7", "g11", "19", "23", "31"]
    assert geometry3k["answer"] == ["6", "120", "12", "5", "\\sqrt{2}", "2\\pi"]  # letters resolved to values
    assert geometry3k["answer_letter"] == ["B", "D", "B", "", "B", "B"]  # value "12" found among the options
    assert set(geometry3k["source"]) == {"geometry3k"}


def test_prompt_holds_instruction_problem_logic_form_and_choices(geometry3k):
    first = geometry3k[0]["prompt"]
    assert first.startswith(INSTRUCTION) and "Problem: Find x." in first
    assert "Equals(LengthOf(Line(A, B)), 6)" in first and "Find(x)" in first  # diagram and text logic forms
    assert "Choices: A. 3  B. 6  C. 9  D. 12" in first
    assert "<image>" not in geometry3k[1]["prompt"] and "Supplementary(Angle(1), Angle(2))" in geometry3k[1]["prompt"]
    assert "Perpendicular(Line(A, B), Line(B, C))" in geometry3k[3]["prompt"] and "Choices" not in geometry3k[3]["prompt"]
    assert "Circle O with radius OA = 1." in geometry3k[5]["prompt"]


def test_round_trip_through_math_accuracy_with_values_and_letters(geometry3k):
    columns = {"answer": geometry3k["answer"], "answer_letter": geometry3k["answer_letter"]}
    n = len(geometry3k)
    values = [f"<think>..</think><answer>{a}</answer>" for a in geometry3k["answer"]]
    letters = [f"<think>..</think><answer>{letter or 'Z'}</answer>" for letter in geometry3k["answer_letter"]]
    wrong = ["<think>..</think><answer>A</answer>"] * n  # option A is wrong for every row
    assert math_accuracy(geometry3k["prompt"], values, **columns) == [1.0] * n
    # Row 3 has no options, so a letter cannot be right there.
    assert math_accuracy(geometry3k["prompt"], letters, **columns) == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert math_accuracy(geometry3k["prompt"], wrong, **columns) == [0.0] * n
    # A numerically equal form of the value also counts: 2\pi written as 2*pi, sqrt(2) as \sqrt{2}.
    assert math_accuracy(["p"] * 2, ["<answer>2*pi</answer>", "<answer>sqrt(2)</answer>"], answer=["2\\pi", "\\sqrt{2}"]) == [1.0, 1.0]


def test_missing_fields_are_one_line_errors():
    with pytest.raises(DatasetSourceError, match=r"geometry3k row 4: no answer \(answer/label\); its fields: problem") as info:
        format_geometry3k_example({"problem": "Find x."}, 4)
    assert "\n" not in str(info.value)
    with pytest.raises(DatasetSourceError, match="no problem text"):
        format_geometry3k_example({"answer": "3"})


def test_missing_local_file_and_offline_default_hub_are_clear():
    with pytest.raises(DatasetSourceError, match="no such file or folder"):
        load_prompt_dataset("geometry3k:./nowhere/geo.jsonl")
    with pytest.raises(DatasetSourceError, match="hiyouga/geometry3k.*offline"):
        load_prompt_dataset("geometry3k")
