"""Load a prompt dataset from a built-in task, a local file or folder, or the Hugging Face Hub.

`load_prompt_dataset(source, split)` returns a `datasets.Dataset` with a `prompt` column (a str, or a
list of {"role", "content"} messages) and, when the source has one, an `answer` column; every other
column is kept and reaches the reward functions as a keyword.

How `source` is read, in this order:

1. "<task>" or "<task>:<location>" where <task> is in `BUILTIN_TASKS` (e.g. "arith", "geometry",
   "geometry3k:path/to/data.jsonl"); the task builds the dataset, with <location> passed as `location=`;
2. an existing local path: a .jsonl/.json/.parquet/.csv file (a single file is the "train" split), a
   folder saved by `Dataset.save_to_disk`, or a folder of data files (splits named by file, e.g. test.jsonl);
3. a Hub dataset "org/name" or "org/name:config", through `datasets.load_dataset`.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import os
import random
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow.compute as pc

from align.errors import UserError

TaskBuilder = Callable[..., datasets.Dataset]

# Built-in tasks by name. A task builder takes (split, *, cache_dir, [location], **options) and returns a Dataset.
BUILTIN_TASKS: dict[str, TaskBuilder] = {}

# Modules that register tasks when imported; loaded on first use, skipped when absent.
BUILTIN_TASK_MODULES: tuple[str, ...] = ("align.data.geometry3k", "align.data.geometry", "align.data.hh",
                                        "align.data.word_problems")

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_modules_loaded = False


class DatasetSourceError(UserError, ValueError):
    """A dataset source that cannot be loaded, or loads without the columns training needs. One-line message."""


class MissingSplitError(DatasetSourceError):
    """The source loads, but has no such split (e.g. a single file has only 'train')."""


def register_task(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    """Decorator that adds a task builder to `BUILTIN_TASKS` under `name`."""
    if not name or ":" in name or "/" in name:
        raise DatasetSourceError(f"task name {name!r} must be non-empty and contain neither ':' nor '/'")

    def decorator(builder: TaskBuilder) -> TaskBuilder:
        BUILTIN_TASKS[name] = builder
        return builder

    return decorator


def builtin_tasks() -> dict[str, TaskBuilder]:
    """`BUILTIN_TASKS` after the optional task modules have registered themselves."""
    global _modules_loaded
    if not _modules_loaded:
        for module_name in BUILTIN_TASK_MODULES:
            if importlib.util.find_spec(module_name) is not None:
                importlib.import_module(module_name)
        _modules_loaded = True
    return BUILTIN_TASKS


def load_prompt_dataset(
    source: str,
    split: str = "train",
    *,
    prompt_column: str = "prompt",
    answer_column: str = "answer",
    system_prompt: str | None = None,
    cache_dir: str | None = None,
    **builtin_kwargs: Any,
) -> datasets.Dataset:
    """Load `split` of `source` (module docstring) as a Dataset with `prompt` (and `answer` when present).

    prompt_column / answer_column: the source's names for them (dotted paths reach into nested records, e.g.
        "reward_model.ground_truth"), copied to "prompt" / "answer"; the source column stays.
    system_prompt: when given, plain prompts become chat messages [system, user] (see `to_chat_prompt`).
    builtin_kwargs: options for a built-in task (e.g. size=..., seed=...); an error for other sources.
    """
    if not isinstance(source, str) or not source.strip():
        raise DatasetSourceError(f"dataset source must be a non-empty string, got {source!r}; set data.source=...")
    source = source.strip()
    tasks = builtin_tasks()
    task_name, _, location = source.partition(":")
    if task_name in tasks:
        options = dict(builtin_kwargs)
        if location:
            options["location"] = location
        dataset = tasks[task_name](split, cache_dir=cache_dir, **options)
    else:
        if builtin_kwargs:
            raise DatasetSourceError(
                f"options {sorted(builtin_kwargs)} only apply to built-in tasks ({', '.join(sorted(tasks))}), not to {source!r}"
            )
        dataset = _load_path_or_hub(source, split, cache_dir)
    dataset = _standard_columns(dataset, source, prompt_column, answer_column)
    if system_prompt is not None:
        dataset = to_chat_prompt(dataset, system_prompt)
    return dataset


def to_chat_prompt(dataset: datasets.Dataset, system_prompt: str | None = None) -> datasets.Dataset:
    """Turn plain-text prompts into chat messages: [{"role": "system", ...}?, {"role": "user", "content": prompt}].

    Prompts that are already message lists get the system message prepended unless they start with one.
    """

    def wrap(prompt: Any) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system_prompt is not None and not (messages and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": system_prompt}, *messages]
        return messages

    return dataset.map(lambda row: {"prompt": wrap(row["prompt"])})


def _load_path_or_hub(source: str, split: str, cache_dir: str | None) -> datasets.Dataset:
    path = Path(source).expanduser()
    if path.exists():
        return _load_local(path, split, cache_dir)
    if _looks_like_path(source):
        raise DatasetSourceError(
            f"dataset {source!r}: no such file or folder; give an existing .jsonl/.json/.parquet/.csv file or folder"
        )
    return _load_hub(source, split, cache_dir)


def _looks_like_path(source: str) -> bool:
    # A Hub id is "org/name" (one slash, no extension); anything else that does not exist is a missing path.
    return (
        source.startswith(("/", "./", "../", "~"))
        or Path(source.split(":")[0]).suffix.lower() in _FILE_BUILDERS
        or source.count("/") > 1
        or "\\" in source
    )


def _load_local(path: Path, split: str, cache_dir: str | None) -> datasets.Dataset:
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DatasetSourceError(
                f"dataset file {str(path)!r} has an unknown extension; use one of {', '.join(sorted(_FILE_BUILDERS))}"
            )
        if split.split("[")[0] != "train":
            raise MissingSplitError(
                f"dataset file {str(path)!r} is a single split ('train'), but split={split!r} was asked; "
                "pass that split's own file as the source"
            )
        if builder == "csv":
            _check_csv_header(path)
        return datasets.load_dataset(builder, data_files=str(path), split=split, cache_dir=cache_dir)
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        saved = datasets.load_from_disk(str(path))
        if isinstance(saved, datasets.DatasetDict):
            return _pick_split(saved, split, str(path))
        return saved
    for csv_file in sorted(path.rglob("*.csv")):
        _check_csv_header(csv_file)
    try:
        return datasets.load_dataset(str(path), split=split, cache_dir=cache_dir)
    except ValueError as error:
        if "Unknown split" in str(error):
            raise MissingSplitError(f"dataset folder {str(path)!r}: {' '.join(str(error).split())}") from error
        raise


def _check_csv_header(path: Path) -> None:
    # The CSV reader keeps one of two same-named columns (or renames it) without a word: which answer is that?
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    seen = set()
    for name in header:
        if name in seen:
            raise DatasetSourceError(
                f"dataset file {str(path)!r}: column {name!r} appears twice in the header; rename or drop one of them"
            )
        seen.add(name)


def _pick_split(saved: datasets.DatasetDict, split: str, where: str) -> datasets.Dataset:
    if split not in saved:
        raise MissingSplitError(f"dataset {where!r} has no split {split!r}; its splits: {', '.join(saved)}")
    return saved[split]


def _load_hub(source: str, split: str, cache_dir: str | None) -> datasets.Dataset:
    name, _, config = source.partition(":")
    try:
        return datasets.load_dataset(name, config or None, split=split, cache_dir=cache_dir)
    except Exception as error:  # the hub client raises many types; all mean "could not get it"
        offline = bool(datasets.config.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        reason = "offline (HF_HUB_OFFLINE=1)" if offline else f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        raise DatasetSourceError(
            f"dataset {source!r} is not a local file or folder and could not be loaded from the Hugging Face Hub: {reason}; "
            f"where there is network run `hf download {name} --repo-type dataset --local-dir DIR` and pass DIR (or a file in it)"
        ) from error


def _standard_columns(dataset: datasets.Dataset, source: str, prompt_column: str, answer_column: str) -> datasets.Dataset:
    """Add `prompt` / `answer` as aliases of the given columns (dotted paths reach into nested records).

    The source column stays, so a reward function that reads it by its own name (TRL's
    `accuracy_reward(..., solution)`) still gets it beside ours (`answer`).
    """
    for wanted, given in (("prompt", prompt_column), ("answer", answer_column)):
        if given == wanted:
            if wanted == "prompt" and wanted not in dataset.column_names:
                raise DatasetSourceError(
                    f"dataset {source!r} has no prompt column {given!r}; its columns: {', '.join(_paths(dataset.features))}; "
                    "set data.prompt_column=<one of them>"
                )
            continue
        if given not in _paths(dataset.features):
            raise DatasetSourceError(
                f"dataset {source!r} has no {wanted} column {given!r}; its columns: {', '.join(_paths(dataset.features))}; "
                f"set data.{wanted}_column=<one of them> (dotted for a nested field, e.g. reward_model.ground_truth)"
            )
        if wanted in dataset.column_names and given.split(".")[0] != wanted:  # answer.value replaces answer
            raise DatasetSourceError(
                f"dataset {source!r} has both {given!r} and {wanted!r} columns; rename or drop {wanted!r} before using {given!r} as the {wanted}"
            )
        dataset = dataset.map(lambda row, path=given, name=wanted: {name: _at_path(row, path)})
    _check_prompt_type(dataset, source)
    _check_answer_type(dataset, source, answer_column)
    _check_every_prompt(dataset, source)
    return dataset


def _paths(features: dict, prefix: str = "") -> list[str]:
    """Every column name and dotted path into nested records, e.g. ['reward_model', 'reward_model.ground_truth', ...]."""
    out = []
    for name, feature in features.items():
        out.append(prefix + name)
        if isinstance(feature, dict):
            out += _paths(feature, f"{prefix}{name}.")
    return out


def _at_path(row: dict, path: str):
    if path in row:  # a top-level column whose name itself contains a dot
        return row[path]
    value = row
    for part in path.split("."):
        value = value[part]
    return value


def _check_answer_type(dataset: datasets.Dataset, source: str, answer_column: str) -> None:
    # A dict or list as the gold answer scores every completion 0 without a word (verl's reward_model record).
    # Arrow gives the column one type, so the feature decides for every row (a null row 0 hides nothing).
    if "answer" not in dataset.column_names or not len(dataset):
        return
    feature = dataset.features["answer"]
    if isinstance(feature, datasets.Value):
        return
    row, gold = _first_non_null(dataset, "answer")
    if gold is None:
        return
    inner = ""
    if isinstance(gold, dict) and gold:
        likely = [k for k in gold if any(w in k for w in ("truth", "answer", "solution"))] or list(gold)
        inner = f"; point at the answer inside, e.g. data.answer_column={answer_column}.{likely[0]}"
    raise DatasetSourceError(
        f"dataset {source!r}: the gold answer (column {answer_column!r}) at row {row} is a {type(gold).__name__}, "
        f"not a value: {str(gold)[:80]}{inner}"
    )


def _first_non_null(dataset: datasets.Dataset, column: str) -> tuple[int, Any]:
    for start, batch in _batches(dataset, column):
        for offset, value in enumerate(batch.column(column).to_pylist()):
            if value is not None:
                return start + offset, value
    return -1, None


def _batches(dataset: datasets.Dataset, column: str, size: int = 10_000):
    """(first row, Arrow table of `column`) for each `size` rows, in the dataset's order (indices mapping included)."""
    arrow = dataset.select_columns([column]).with_format("arrow")
    for start in range(0, len(dataset), size):
        yield start, arrow[start:start + size]


def _check_prompt_type(dataset: datasets.Dataset, source: str) -> None:
    if _is_text(dataset.features["prompt"]) or _is_messages(dataset.features["prompt"]):
        return
    raise DatasetSourceError(
        f"dataset {source!r}: column 'prompt' holds {dataset.features['prompt']}; it must hold strings or lists of "
        "{'role', 'content'} messages"
    )


def _is_text(feature) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _is_messages(feature) -> bool:
    inner = getattr(feature, "feature", None)  # List / Sequence / LargeList of one record type
    if isinstance(feature, list) and len(feature) == 1:  # the [{"role": ..., "content": ...}] spelling
        inner = feature[0]
    if type(inner).__name__ == "Json":  # messages of differing keys: each row is checked in _check_every_prompt
        return True
    return isinstance(inner, dict) and "role" in inner and "content" in inner


def _has_text(messages: Any) -> bool:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        return False
    return any(isinstance(m.get("content"), str) and m["content"].strip() for m in messages)


def _check_every_prompt(dataset: datasets.Dataset, source: str) -> None:
    """No prompt may be missing, empty or only whitespace: it would crash (or train on nothing) when drawn."""
    text = _is_text(dataset.features["prompt"])
    prompts = dataset.select_columns(["prompt"])
    for start, batch in _batches(dataset, "prompt"):
        column = batch.column("prompt")
        if text:  # vectorised: 1M rows in well under a second
            blank = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_trim_whitespace(column), ""))
            first = pc.index(pc.fill_null(blank, True), True).as_py()
            if first >= 0:
                raise DatasetSourceError(
                    f"dataset {source!r}: the prompt at row {start + first} is empty (or only whitespace); "
                    "remove that row or give it a prompt"
                )
            continue
        decoded = prompts[start:start + len(column)]["prompt"]  # python rows: Json features decoded
        for offset, messages in enumerate(decoded):
            if not _has_text(messages):
                raise DatasetSourceError(
                    f"dataset {source!r}: the chat prompt at row {start + offset} has no text ({str(messages)[:80]}); "
                    "remove that row or give its messages a 'content'"
                )


# ---------------------------------------------------------------------------------------------------------
# Built-in task "arith": two-number addition and subtraction, for tests and smoke runs without any download.

ARITH_INSTRUCTION = "Think inside <think></think>, then give only the number inside <answer></answer>."


@register_task("arith")
def arith_task(
    split: str = "train",
    *,
    size: int = 1000,
    seed: int = 0,
    max_operand: int = 99,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """`size` problems "What is a + b?" / "a - b" with 0 <= a, b <= max_operand; columns prompt, answer, id, source.

    Train and test never share a problem: each (a, op, b) belongs to one split by a hash of its text
    (about 10% go to test). The same (split, size, seed, max_operand) always gives the same rows.
    """
    if split not in ("train", "test"):
        raise DatasetSourceError(f"task 'arith' has splits 'train' and 'test', not {split!r}")
    if max_operand < 1:
        raise DatasetSourceError(f"task 'arith': max_operand must be >= 1, got {max_operand}")
    pool = [
        (a, op, b)
        for a in range(max_operand + 1)
        for b in range(max_operand + 1)
        for op in "+-"
        if (zlib.crc32(f"{a}{op}{b}".encode()) % 10 == 0) == (split == "test")
    ]
    if not 0 < size <= len(pool):
        raise DatasetSourceError(
            f"task 'arith': size={size} but the {split} split has {len(pool)} problems at max_operand={max_operand}; lower size or raise max_operand"
        )
    chosen = random.Random(seed).sample(pool, size)
    rows = {
        "prompt": [f"What is {a} {op} {b}? {ARITH_INSTRUCTION}" for a, op, b in chosen],
        "answer": [str(a + b if op == "+" else a - b) for a, op, b in chosen],
        "id": [f"arith-{a}{op}{b}" for a, op, b in chosen],
        "source": ["arith"] * size,
    }
    return datasets.Dataset.from_dict(rows)
