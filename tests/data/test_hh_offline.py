"""HH chosen/rejected loader on a local fixture in the Anthropic schema, and offline CoPG rows."""

import json
from pathlib import Path

import pytest

from align.data import DatasetSourceError, load_prompt_dataset
from align.data.hh import split_preference
from align.data.offline import group_offline_rows

FIXTURE = Path(__file__).parent / "fixtures" / "hh_small.jsonl"


def test_hh_fixture_becomes_prompts_with_reference_answers():
    ds = load_prompt_dataset(f"hh:{FIXTURE}", "train")
    assert set(ds.column_names) == {"prompt", "chosen", "rejected"} and len(ds) == 3
    assert ds[0]["prompt"] == [{"role": "user", "content": "How do I boil an egg?"}]
    assert ds[0]["chosen"].startswith("Put it in boiling water") and ds[0]["rejected"] == "I don't know."
    # a multi-turn dialogue keeps its earlier turns in the prompt
    assert [m["role"] for m in ds[1]["prompt"]] == ["user", "assistant", "user"]
    assert ds[1]["chosen"] == "The capital of France is Paris." and ds[1]["rejected"] == "Lyon."


@pytest.mark.parametrize("chosen, rejected, match", [
    ("Human: hi\n\nAssistant: a", "\n\nHuman: hi\n\nAssistant: b", "HH row 7: the dialogue does not start"),
    ("\n\nHuman: hi\n\nAssistant: a", "\n\nHuman: ho\n\nAssistant: b", "HH row 7: chosen and rejected differ"),
    ("\n\nHuman: hi", "\n\nHuman: hi", "must both end with an"),
])
def test_malformed_hh_rows_are_one_line_errors_naming_the_row(chosen, rejected, match):
    with pytest.raises(DatasetSourceError, match=match) as err:
        split_preference(chosen, rejected, 7)
    assert "\n" not in str(err.value).replace("\\n", "")


def _rows(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_prompt_dataset(str(path), "train")


def test_offline_rows_group_by_prompt(tmp_path):
    chat = [{"role": "user", "content": "q2"}]
    ds = _rows(tmp_path, [
        {"prompt": "q1", "completion": "a", "reward": 1.0, "answer": "1"},
        {"prompt": "q1", "completion": "b", "reward": 0},
        {"prompt": "q1", "completion": "c", "reward": 0.5},
    ])
    groups = group_offline_rows(ds)
    assert len(groups) == 1 and groups[0].completions == ["a", "b", "c"] and groups[0].rewards == [1.0, 0.0, 0.5]
    assert groups[0].columns == {"answer": "1"} and groups[0].completion_ids is None
    chat_rows = _rows(tmp_path, [{"prompt": chat, "completion": "x", "reward": 1, "completion_ids": [5, 6]},
                                 {"prompt": chat, "completion": "", "reward": 0, "completion_ids": [7]}])
    assert group_offline_rows(chat_rows)[0].completion_ids == [[5, 6], [7]]


def test_one_row_per_prompt_is_an_error_naming_the_prompt(tmp_path):
    ds = _rows(tmp_path, [{"prompt": "q1", "completion": "a", "reward": 1}, {"prompt": "q1", "completion": "b", "reward": 0},
                          {"prompt": "lonely prompt", "completion": "c", "reward": 1}])
    with pytest.raises(DatasetSourceError, match=r"prompt 'lonely prompt' has one row \(row 2\)"):
        group_offline_rows(ds)


@pytest.mark.parametrize("row, match", [
    ({"prompt": "q", "completion": "a"}, "has no 'reward' column"),
    ({"prompt": "q", "completion": "a", "reward": "high"}, "row 0: reward 'high' is not a finite number"),
    ({"prompt": "q", "completion": "", "reward": 1}, "row 0: completion '' is empty"),
])
def test_bad_offline_rows_name_the_row_or_column(tmp_path, row, match):
    ds = _rows(tmp_path, [row, {**row, "completion": "x"}])
    with pytest.raises(DatasetSourceError, match=match):
        group_offline_rows(ds)
