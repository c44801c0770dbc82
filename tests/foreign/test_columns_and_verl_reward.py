"""Dotted and aliased data columns, and verl's compute_score through the adapter."""

from __future__ import annotations

import json

import pytest

from align.data import load_prompt_dataset
from align.data.loading import DatasetSourceError
from rewards.runner import compute_rewards, load_reward_functions
from rewards.registry import get_reward_function
from tests.foreign.verl_data import write_verl_parquet


@pytest.fixture(scope="module")
def verl_dir(tmp_path_factory):
    return write_verl_parquet(tmp_path_factory.mktemp("verl") / "gsm8k")


def test_dotted_answer_column_reaches_into_the_record_and_keeps_it(verl_dir):
    ds = load_prompt_dataset(str(verl_dir), "train", answer_column="reward_model.ground_truth")
    assert ds[0]["answer"] == "72"
    assert ds[0]["reward_model"] == {"style": "rule", "ground_truth": "72"}  # the source column stays
    assert ds[0]["prompt"][0]["role"] == "user"


def test_a_record_as_the_gold_answer_is_an_error_naming_the_field(verl_dir):
    with pytest.raises(DatasetSourceError) as err:
        load_prompt_dataset(str(verl_dir), "train", answer_column="reward_model")
    assert "is a dict" in str(err.value) and "data.answer_column=reward_model.ground_truth" in str(err.value)


def test_a_list_as_the_gold_answer_is_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "p", "answer": ["1", "2"]}) + "\n")
    with pytest.raises(DatasetSourceError, match="is a list"):
        load_prompt_dataset(str(path))


def test_aliased_columns_keep_the_source_for_trl_rewards(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "What is $1+1$?", "solution": "$2$"}) + "\n")
    ds = load_prompt_dataset(str(path), prompt_column="question", answer_column="solution")
    row = ds[0]
    assert (row["prompt"], row["question"], row["answer"], row["solution"]) == ("What is $1+1$?",) * 2 + ("$2$",) * 2
    # TRL's accuracy_reward reads `solution`, ours reads `answer`: both score the same completion.
    fns = load_reward_functions(["trl.rewards:accuracy_reward", "math_accuracy"])
    result = compute_rewards(fns, [row["prompt"]], [[{"role": "assistant", "content": r"The answer is $\boxed{2}$"}]],
                             {k: [v] for k, v in row.items() if k != "prompt"}, [[1]])
    assert result.per_function == {"accuracy_reward": [1.0], "math_accuracy": [1.0]}


def test_missing_dotted_path_lists_the_nested_fields(verl_dir):
    with pytest.raises(DatasetSourceError, match="reward_model.ground_truth"):
        load_prompt_dataset(str(verl_dir), "train", answer_column="reward_model.truth")


def test_verl_adapter_passes_verl_arguments_and_reads_score(verl_dir):
    ds = load_prompt_dataset(str(verl_dir), "train")
    rows = [ds[i] for i in range(3)]
    fn = load_reward_functions([f"verl:{verl_dir.parent / 'gsm8k_reward.py'}:compute_score"])
    assert fn[0].name == "compute_score"
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}  # includes `ability`, which verl never passes
    result = compute_rewards(fn, [r["prompt"] for r in rows], [[{"role": "assistant", "content": "#### 72"}]] * 3,
                             columns, [[1]] * 3)
    assert result.per_function["compute_score"] == [1.0, 1.0, 1.0]
    # ground truth falls back to `answer` when there is no reward_model column
    del columns["reward_model"]
    columns["answer"] = ["72", "0", "27"]  # the middle one is not its row's answer_copy: the check inside fails
    result = compute_rewards(fn, [r["prompt"] for r in rows], ["#### 72"] * 3, columns, [[1]] * 3)
    assert result.per_function["compute_score"] == [1.0, 0.0, 1.0]


def test_verl_adapter_errors_name_the_function(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return {'acc': 1}\n")
    fn = get_reward_function(f"verl:{bad}:compute_score")
    with pytest.raises(ValueError, match="'compute_score' returned a dict without 'score'"):
        fn(["p"], ["c"], answer=["1"])
    with pytest.raises(ValueError, match="needs a ground truth"):
        fn(["p"], ["c"])
