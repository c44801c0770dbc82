"""Geometry3K-style data as a prompt dataset: source "geometry3k" (the Hub copy) or "geometry3k:<file, folder or hub name>".

Accepted input fields (the first present name wins; other columns, e.g. images, are dropped):

    problem text   problem | question | problem_text        ("<image>" placeholders are removed)
    choices        choices | options                       list of str, or {"A": ..., "B": ...}; optional
    answer         answer | label                          an option letter ("B") or a value ("6")
    logic form     logic_form | diagram_logic_form | text_logic_form | diagram_description | diagram
                                                           str, list of str, or InterGPS's dict of such lists
    id             id | problem_id | pid                   optional; the row number otherwise

Output columns: `prompt` (instruction asking for <think>...</think><answer>...</answer>, with the logic form
and lettered choices when present), `answer` (the answer VALUE: the chosen option's text when the input
gave a letter), `answer_letter` (the option letter, "" without choices), `choices`, `id`, `source`.
`math_accuracy` reads `answer_letter`, so a completion may answer with either the value or the letter.
"""

from __future__ import annotations

from typing import Any

import datasets

from align.data.loading import DatasetSourceError, _load_path_or_hub, register_task

DEFAULT_HUB_NAME = "hiyouga/geometry3k"
INSTRUCTION = (
    "Solve the geometry problem. Think step by step inside <think></think>, "
    "then give only the final answer inside <answer></answer>."
)

_PROBLEM_FIELDS = ("problem", "question", "problem_text")
_CHOICE_FIELDS = ("choices", "options")
_ANSWER_FIELDS = ("answer", "label")
_LOGIC_FIELDS = ("logic_form", "diagram_logic_form", "text_logic_form", "diagram_description", "diagram")
_ID_FIELDS = ("id", "problem_id", "pid")
# Inside InterGPS's logic_form dict, the parts that describe the figure in words.
_LOGIC_DICT_KEYS = ("diagram_logic_form", "text_logic_form", "dissolved_text_logic_form")


def _first(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = row.get(name)
        if value is not None and value != "" and value != []:
            return value
    return None


def _choices(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [str(raw[key]).strip() for key in sorted(raw)]
    if isinstance(raw, (list, tuple)):
        return [str(choice).strip() for choice in raw]
    raise DatasetSourceError(f"geometry3k: choices must be a list or a {{letter: value}} dict, got {type(raw).__name__}")


def _logic_lines(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [line for line in (part.strip() for part in raw.splitlines()) if line]
    if isinstance(raw, dict):
        lines: list[str] = []
        for key in _LOGIC_DICT_KEYS:
            for line in _logic_lines(raw.get(key)):
                if line not in lines:
                    lines.append(line)
        return lines
    if isinstance(raw, (list, tuple)):
        return [str(item).strip() for item in raw if str(item).strip()]
    return [str(raw)]


def format_geometry3k_example(row: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """One raw Geometry3K-style row -> {prompt, answer, answer_letter, choices, id, source} (module docstring)."""
    problem = _first(row, _PROBLEM_FIELDS)
    answer = _first(row, _ANSWER_FIELDS)
    if problem is None or answer is None:
        missing = "problem text (problem/question/problem_text)" if problem is None else "answer (answer/label)"
        raise DatasetSourceError(f"geometry3k row {index}: no {missing}; its fields: {', '.join(sorted(row))}")
    problem = str(problem).replace("<image>", "").strip()
    choices = _choices(_first(row, _CHOICE_FIELDS))
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    answer = str(answer).strip()

    letter = answer.strip("().").upper()
    if choices and len(letter) == 1 and letter in letters:
        answer_letter, answer_value = letter, choices[letters.index(letter)]
    else:
        answer_value = answer
        answer_letter = letters[choices.index(answer)] if answer in choices else ""

    parts = [INSTRUCTION, "", f"Problem: {problem}"]
    logic = _logic_lines(_first(row, _LOGIC_FIELDS))
    if logic:
        parts += ["Diagram (logic form):", *logic]
    if choices:
        parts.append("Choices: " + "  ".join(f"{l}. {c}" for l, c in zip(letters, choices)))
        parts.append("Answer with the value of the correct choice or its letter.")
    row_id = _first(row, _ID_FIELDS)
    return {
        "prompt": "\n".join(parts),
        "answer": answer_value,
        "answer_letter": answer_letter,
        "choices": choices,
        "id": str(row_id) if row_id is not None else str(index),
        "source": "geometry3k",
    }


def geometry3k_to_prompts(raw: datasets.Dataset) -> datasets.Dataset:
    """Map a raw Geometry3K-style dataset to the prompt format; the raw columns are dropped."""
    return raw.map(format_geometry3k_example, with_indices=True, remove_columns=raw.column_names)


@register_task("geometry3k")
def load_geometry3k(
    split: str = "train",
    *,
    location: str = DEFAULT_HUB_NAME,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Load Geometry3K-style data from a local .jsonl/.parquet file or folder, or a Hub name, as prompts."""
    return geometry3k_to_prompts(_load_path_or_hub(location, split, cache_dir))
