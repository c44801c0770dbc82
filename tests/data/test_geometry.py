"""The synthetic geometry task: columns, seed determinism, disjoint splits, correct reference solutions."""

import re

import pytest

from align.data.geometry import FAMILIES, generate_geometry_rows, make_geometry_dataset, problem_pool, split_of
from rewards.geometry import evaluate_expression, geometry_accuracy, has_valid_aux, prompt_bindings


def _final_relation_value(solution: str) -> float:
    """Value of the last `name=expression` inside think (after any aux block)."""
    think = re.search(r"<think>(.*)</think>", solution).group(1)
    relation = re.sub(r"<aux>.*?</aux>", "", think)
    name, expression = relation.split("=", 1)
    return evaluate_expression(expression, {})


def test_columns_and_types():
    ds = make_geometry_dataset("train", 24, seed=0)
    assert set(ds.column_names) == {"prompt", "answer", "family", "aux_helps", "solution_aux", "solution_direct",
                                  "solution"}
    row = ds[0]
    assert row["prompt"][-1]["role"] == "user" and isinstance(row["prompt"][-1]["content"], str)
    assert isinstance(row["answer"], str) and isinstance(row["aux_helps"], bool)
    # families taken in turn, so every family appears in 24 rows, each with its own aux_helps flag
    assert {r["family"] for r in ds} == set(FAMILIES)
    assert all(r["aux_helps"] == FAMILIES[r["family"]].aux_helps for r in ds)
    assert {True, False} == {f.aux_helps for f in FAMILIES.values()}


def test_system_prompt_is_optional():
    rows = generate_geometry_rows("test", 2, system_prompt="Be brief.")
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert len(generate_geometry_rows("test", 2)[0]["prompt"]) == 1


def test_splits_are_disjoint_for_every_seed():
    train = {(r["family"], r["prompt"][-1]["content"]) for s in (0, 1) for r in generate_geometry_rows("train", 3000, seed=s)}
    test = {(r["family"], r["prompt"][-1]["content"]) for s in (0, 1) for r in generate_geometry_rows("test", 1000, seed=s)}
    assert train and test and not train & test
    for name in FAMILIES:  # the hash split holds out a real share of every family
        train_pool, test_pool, sft_pool = (problem_pool(name, s) for s in ("train", "test", "sft"))
        assert test_pool and train_pool and sft_pool
        assert not set(train_pool) & set(test_pool) and not set(sft_pool) & (set(train_pool) | set(test_pool))
        assert all(split_of(name, p) == "test" for p in test_pool)


def test_every_family_has_a_pool_to_learn_its_arithmetic_from():
    # With 6-16 warm-start problems a family was memorised, not learned (held-out accuracy 0).
    for name in FAMILIES:
        sizes = {split: len(problem_pool(name, split)) for split in ("sft", "train", "test")}
        assert sizes["sft"] >= 25 and sizes["train"] >= 25 and sizes["test"] >= 12, (name, sizes)


def test_seed_determines_the_draw():
    assert generate_geometry_rows("train", 40, seed=3) == generate_geometry_rows("train", 40, seed=3)
    assert generate_geometry_rows("train", 40, seed=3) != generate_geometry_rows("train", 40, seed=4)


def test_no_repeats_until_a_family_pool_is_exhausted():
    rows = generate_geometry_rows("test", 8 * 5, seed=0)
    for name in FAMILIES:
        questions = [r["prompt"][-1]["content"] for r in rows if r["family"] == name]
        assert len(set(questions)) == min(len(questions), len(problem_pool(name, "test")))


def test_reference_solutions_are_correct_and_in_both_styles():
    rows = generate_geometry_rows("train", 800, seed=0) + generate_geometry_rows("test", 200, seed=0)
    for row in rows:
        assert _final_relation_value(row["solution_direct"]) == float(row["answer"]), row
        assert _final_relation_value(row["solution_aux"]) == float(row["answer"]), row
        assert "<aux>" not in row["solution_direct"]
        assert row["solution"] == (row["solution_aux"] if row["aux_helps"] else row["solution_direct"])
        assert has_valid_aux(row["solution_aux"], prompt_bindings(row["prompt"])), row
        assert not has_valid_aux(row["solution_direct"], prompt_bindings(row["prompt"]))
    for style in ("solution_aux", "solution_direct"):
        scores = geometry_accuracy([r["prompt"] for r in rows], [r[style] for r in rows], answer=[r["answer"] for r in rows])
        assert scores == [1.0] * len(rows)


def test_aux_route_adds_a_step_only_where_it_is_meant_to_help():
    # helps: the direct relation holds two or more operations, the aux route one per written value;
    # hurts: the direct relation holds at most one operation, so the aux route only adds one.
    def operations(text):
        return len(re.findall(r"(?<=[\d)])[-+*/]", text))

    for name, family in FAMILIES.items():
        row = generate_geometry_rows("test", 1, families=[name])[0]
        direct = re.search(r"<think>(.*)</think>", row["solution_direct"]).group(1)
        assert (operations(direct) >= 2) == family.aux_helps, name


def test_families_filter_and_bad_input():
    rows = generate_geometry_rows("train", 10, families=["supplement"])
    assert {r["family"] for r in rows} == {"supplement"}
    with pytest.raises(ValueError, match="split 'dev'"):
        make_geometry_dataset("dev", 4)
    with pytest.raises(ValueError, match="nope"):
        make_geometry_dataset("train", 4, families=["nope"])
    with pytest.raises(ValueError, match="n=0"):
        make_geometry_dataset("train", 0)


def test_registered_as_builtin_task():
    from align.data.loading import load_prompt_dataset

    ds = load_prompt_dataset("geometry", "test", size=16, seed=2)
    assert len(ds) == 16 and "answer" in ds.column_names and "family" in ds.column_names
