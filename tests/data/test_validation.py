"""Data is checked up front, every row, when it is loaded: a bad row is one line naming it, not a traceback
(or a silent 0.0 reward) hours in when a batch first draws it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from align.data.loading import DatasetSourceError, load_prompt_dataset

ROOT = Path(__file__).resolve().parents[2]


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def good_rows(n: int = 5) -> list[dict]:
    return [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(n)]


def fails(source: str, *parts: str, **kwargs) -> str:
    with pytest.raises(DatasetSourceError) as info:
        load_prompt_dataset(source, "train", **kwargs)
    message = str(info.value)
    assert "\n" not in message and all(part in message for part in parts), message
    return message


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_an_empty_or_blank_prompt_is_an_error_naming_its_row(prompt, tmp_path):
    rows = good_rows()
    rows[3]["prompt"] = prompt
    fails(jsonl(tmp_path / "rows.jsonl", rows), "row 3", "empty", "remove")


def test_a_missing_prompt_is_an_error_naming_its_row(tmp_path):
    rows = good_rows()
    rows[2]["prompt"] = None
    fails(jsonl(tmp_path / "rows.jsonl", rows), "row 2", "empty")


def test_chat_messages_without_content_are_an_error_naming_the_row(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": "1"} for i in range(4)]
    rows[1]["prompt"] = [{"role": "user", "content": "  "}]
    rows[2]["prompt"] = [{"role": "user"}]
    fails(jsonl(tmp_path / "rows.jsonl", rows), "row 1", "no text")


def test_a_prompt_that_is_neither_text_nor_messages_is_refused(tmp_path):
    fails(jsonl(tmp_path / "rows.jsonl", [{"prompt": 5, "answer": "1"}]), "column 'prompt'", "strings or lists")


def test_every_answer_is_type_checked_not_only_row_0(tmp_path):
    rows = good_rows()
    rows[0]["answer"] = None
    for i in range(1, 5):
        rows[i]["answer"] = {"value": str(i)}
    message = fails(jsonl(tmp_path / "rows.jsonl", rows), "row 1", "is a dict")
    assert "data.answer_column=answer.value" in message


def test_the_nested_answer_suggestion_is_accepted(tmp_path):
    rows = [{"prompt": f"q{i}", "answer": {"value": str(i), "style": "rule"}} for i in range(3)]
    source = jsonl(tmp_path / "rows.jsonl", rows)
    message = fails(source, "data.answer_column=answer.value")
    suggested = message.split("data.answer_column=")[1].split()[0].rstrip(";,.")
    dataset = load_prompt_dataset(source, "train", answer_column=suggested)
    assert dataset["answer"] == ["0", "1", "2"]


def test_a_duplicate_csv_column_is_an_error_naming_it(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("prompt,answer,answer\nWhat is 1 + 1?,2,3\n")
    fails(str(path), "'answer'", "twice", "rename")


def test_good_data_still_loads(tmp_path):
    dataset = load_prompt_dataset(jsonl(tmp_path / "rows.jsonl", good_rows()), "train")
    assert len(dataset) == 5 and dataset[0]["answer"] == "1"


# ---- prompt + rollout.max_tokens over the context: every row, before step 1 ----


def test_every_prompt_length_is_checked_up_front(tmp_path):
    from align.models import load_tokenizer, tiny_model_path
    from align.sources.prompts import check_all_prompt_lengths

    tokenizer = load_tokenizer(str(tiny_model_path(str(tmp_path / "cache"))))
    prompts = [f"What is {i} + 1?" for i in range(300)]
    prompts[257] = "word " * 500
    dataset = datasets.Dataset.from_dict({"prompt": prompts})
    check_all_prompt_lengths(tokenizer, dataset.select(range(257)), max_tokens=256, context=512)  # fits
    with pytest.raises(DatasetSourceError) as info:
        check_all_prompt_lengths(tokenizer, dataset, max_tokens=256, context=512)
    message = str(info.value)
    assert "row 257" in message and "+ rollout.max_tokens=256 exceeds the model's context of 512" in message
    assert "starting 'word word" in message and "\n" not in message


@pytest.mark.parametrize("bad, named", [
    ({"prompt": " \n", "answer": "3"}, ["row 5", "empty"]),
    ({"prompt": "word " * 3000, "answer": "3"}, ["row 5", "exceeds the model's context"]),
])
def test_bad_data_stops_the_run_before_its_folder_is_written(bad, named, tmp_path):
    # Checked in align/sources/preflight.py before config.yaml is written, not in the trainer after it.
    rows = good_rows(8)
    rows[5] = bad
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "align/train.py", "recipe=grpo_math", f"data.source={jsonl(tmp_path / 'rows.jsonl', rows)}",
         f"log.run_dir={run_dir}", "log.eval_every=0", "eval.holdout=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("align: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert all(part in errors[0] for part in named), errors[0]
    assert not run_dir.exists()  # nothing written: the next run with fixed data starts clean
