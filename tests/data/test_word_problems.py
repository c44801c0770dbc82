from __future__ import annotations

import pytest

from align.data import load_prompt_dataset
from align.data.word_problems import FAMILIES, generate_word_problem_rows, render, split_of


def _key(row):
    return row["prompt"][-1]["content"]


def test_splits_are_disjoint_and_seed_free():
    train = {_key(r) for seed in (0, 1) for r in generate_word_problem_rows("train", 400, seed)}
    test = {_key(r) for r in generate_word_problem_rows("test", 400, 0)}
    assert train and test and not train & test
    assert [_key(r) for r in generate_word_problem_rows("train", 20, 3)] == [_key(r) for r in generate_word_problem_rows("train", 20, 3)]
    assert [_key(r) for r in generate_word_problem_rows("train", 20, 3)] != [_key(r) for r in generate_word_problem_rows("train", 20, 4)]


def test_every_family_renders_its_own_answer():
    for name, family in FAMILIES.items():
        space = family.space()
        assert len(space) >= 40, name
        for params in space[:: max(1, len(space) // 25)]:
            question, answer = render(name, params)
            assert isinstance(answer, int) and answer >= 0, (name, params)
            assert all(str(p) in question for p in params if name != "share") or name == "share"
            assert split_of(name, params) in ("train", "test")
    # answers are what the story says (spot checks)
    assert render("change", (3, 4, 20))[1] == 8 and render("boxes", (6, 3, 2))[1] == 20
    assert render("share", (4, 7))[1] == 7 and "28" in render("share", (4, 7))[0]


def test_builtin_task_loads_with_chat_prompts_and_answers():
    ds = load_prompt_dataset("word_problems", "test", size=14)
    assert len(ds) == 14 and {r["family"] for r in ds} == set(FAMILIES)
    row = ds[0]
    assert row["prompt"][-1]["role"] == "user" and "\\boxed{}" in row["prompt"][-1]["content"]
    assert row["answer"].lstrip("-").isdigit()
    with pytest.raises(ValueError, match="families"):
        generate_word_problem_rows("train", 4, families=["nope"])
