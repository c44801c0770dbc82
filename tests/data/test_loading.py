"""load_prompt_dataset: built-in task, local files and folders, Hub names offline, column checks."""

from __future__ import annotations

import json

import datasets
import pytest

from align.data import BUILTIN_TASKS, DatasetSourceError, arith_task, load_prompt_dataset, to_chat_prompt

ROWS = [
    {"question": "What is 1 + 1?", "solution": "2", "level": 1},
    {"question": "What is 2 + 3?", "solution": "5", "level": 2},
]


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf-cache")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_arith_task_is_seeded_correct_and_train_test_disjoint():
    train = arith_task("train", size=300, seed=1)
    assert train["prompt"] == arith_task("train", size=300, seed=1)["prompt"]
    assert train["prompt"] != arith_task("train", size=300, seed=2)["prompt"]
    for row in train.select(range(20)):
        a, op, b = row["prompt"].split("?")[0].removeprefix("What is ").split()
        assert int(row["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    # 21 * 21 * 2 = 882 problems at max_operand=20, about a tenth of them in test.
    test_ids = set(arith_task("test", size=60, max_operand=20)["id"])
    train_ids = set(arith_task("train", size=750, max_operand=20)["id"])
    assert len(test_ids) == 60 and len(train_ids) == 750 and not (test_ids & train_ids)


def test_arith_task_errors():
    with pytest.raises(DatasetSourceError, match="splits 'train' and 'test', not 'validation'"):
        arith_task("validation")
    with pytest.raises(DatasetSourceError, match="size=100000 but the train split has"):
        arith_task("train", size=100_000)


def test_builtin_task_by_name_with_options_and_answers_scored_by_math_accuracy():
    from rewards.math import math_accuracy

    dataset = load_prompt_dataset("arith", "test", size=5, seed=3)
    assert len(dataset) == 5 and set(dataset.column_names) >= {"prompt", "answer", "id", "source"}
    completions = [f"<think>..</think><answer>{a}</answer>" for a in dataset["answer"]]
    assert math_accuracy(dataset["prompt"], completions, answer=dataset["answer"]) == [1.0] * 5
    assert "arith" in BUILTIN_TASKS


def test_jsonl_with_renamed_columns(tmp_path, cache):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    dataset = load_prompt_dataset(str(path), prompt_column="question", answer_column="solution", cache_dir=cache)
    assert dataset["prompt"] == ["What is 1 + 1?", "What is 2 + 3?"]
    assert dataset["answer"] == ["2", "5"] and dataset["level"] == [1, 2]  # other columns are kept


def test_parquet_file(tmp_path, cache):
    path = tmp_path / "data.parquet"
    datasets.Dataset.from_list([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]).to_parquet(str(path))
    assert load_prompt_dataset(str(path), cache_dir=cache)["answer"] == ["1", "2"]


def test_folder_with_split_files(tmp_path, cache):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"prompt": "a", "answer": "1"}] * 3)
    write_jsonl(folder / "test.jsonl", [{"prompt": "b", "answer": "2"}])
    assert len(load_prompt_dataset(str(folder), "train", cache_dir=cache)) == 3
    assert load_prompt_dataset(str(folder), "test", cache_dir=cache)["prompt"] == ["b"]
    with pytest.raises(DatasetSourceError, match="Unknown split") as info:
        load_prompt_dataset(str(folder), "validation", cache_dir=cache)
    assert "\n" not in str(info.value)


def test_folder_saved_with_save_to_disk(tmp_path):
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "a"}])}).save_to_disk(str(folder))
    assert load_prompt_dataset(str(folder))["prompt"] == ["a"]
    with pytest.raises(DatasetSourceError, match="has no split 'test'; its splits: train"):
        load_prompt_dataset(str(folder), "test")


def test_single_file_refuses_a_split_other_than_train(tmp_path, cache):
    path = write_jsonl(tmp_path / "all.jsonl", [{"prompt": "a"}])
    with pytest.raises(DatasetSourceError, match="single split"):
        load_prompt_dataset(str(path), "test", cache_dir=cache)


@pytest.mark.parametrize("source", ["./missing/train.jsonl", "/no/such/folder", "data/x/y", "missing.parquet"])
def test_missing_path_is_one_clear_line(source):
    with pytest.raises(DatasetSourceError) as info:
        load_prompt_dataset(source)
    assert "no such file or folder" in str(info.value) and source in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("source", ["someorg/some-dataset", "someorg/some-dataset:main"])
def test_offline_hub_name_says_offline_and_how_to_fix(source, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetSourceError) as info:
        load_prompt_dataset(source)
    message = str(info.value)
    assert "\n" not in message and f"'{source}'" in message and "offline (HF_HUB_OFFLINE=1)" in message
    assert "hf download someorg/some-dataset --repo-type dataset" in message


def test_missing_prompt_column_lists_columns_and_the_fix(tmp_path, cache):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(DatasetSourceError) as info:
        load_prompt_dataset(str(path), cache_dir=cache)
    message = str(info.value)
    assert "no prompt column 'prompt'" in message and "question, solution, level" in message
    assert "data.prompt_column=" in message and "\n" not in message
    with pytest.raises(DatasetSourceError, match="no answer column 'gold'"):
        load_prompt_dataset(str(path), prompt_column="question", answer_column="gold", cache_dir=cache)


def test_prompt_column_of_the_wrong_type_is_rejected(tmp_path, cache):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": 3}])
    with pytest.raises(DatasetSourceError, match="must hold strings or lists of"):
        load_prompt_dataset(str(path), cache_dir=cache)


def test_options_for_a_non_builtin_source_are_rejected(tmp_path, cache):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a"}])
    with pytest.raises(DatasetSourceError, match=r"options \['size'\] only apply to built-in tasks"):
        load_prompt_dataset(str(path), size=3, cache_dir=cache)


def test_system_prompt_wraps_plain_prompts_into_messages(tmp_path, cache):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "hi"}])
    dataset = load_prompt_dataset(str(path), system_prompt="Be brief.", cache_dir=cache)
    assert dataset[0]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    # Already-conversational prompts keep their own system message.
    again = to_chat_prompt(dataset, "Other.")
    assert again[0]["prompt"] == dataset[0]["prompt"]
    assert to_chat_prompt(datasets.Dataset.from_list([{"prompt": "x"}]))[0]["prompt"] == [{"role": "user", "content": "x"}]


def test_conversational_prompts_load_as_messages(tmp_path, cache):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": [{"role": "user", "content": "hi"}], "answer": "1"}])
    assert load_prompt_dataset(str(path), cache_dir=cache)[0]["prompt"] == [{"role": "user", "content": "hi"}]


def test_chat_prompt_ids_with_the_tiny_tokenizer(tiny_path):
    from align.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_path)
    dataset = to_chat_prompt(arith_task("train", size=2), "Solve it.")
    text = tokenizer.apply_chat_template(dataset[0]["prompt"], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert text.startswith("<|im_start|>system\nSolve it.<|im_end|>") and dataset[0]["prompt"][1]["content"] in text
    assert tokenizer.decode(ids) == text
