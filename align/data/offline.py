"""Offline rows for CoPG: fixed (prompt, completion, reward) rows, several per prompt.

Format (docs/OFFLINE.md): a .jsonl/.json/.parquet/.csv file or folder, one row per completion:

    prompt          str, or chat messages [{"role", "content"}, ...]   (data.prompt_column renames)
    completion      str: the completion's text
    reward          number: its scalar reward
    completion_ids  optional list of int: the exact completion tokens (as `align sample` writes them);
                    without it the text is tokenized and EOS appended
    anything else   kept, unused by training

Rows with the same prompt form a group; CoPG compares completions within a group, so every prompt
needs at least two rows. `python -m align sample` writes such a file from any recipe.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from align.data.loading import DatasetSourceError

REQUIRED_COLUMNS = ("prompt", "completion", "reward")


@dataclass
class OfflineGroup:
    """The rows of one prompt (in file order)."""

    prompt: Any
    completions: list[str]
    rewards: list[float]
    rows: list[int]  # row numbers in the file, for error messages
    completion_ids: list[list[int]] | None = None
    columns: dict[str, Any] = field(default_factory=dict)  # the first row's other columns


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def group_offline_rows(dataset, source: str = "offline data") -> list[OfflineGroup]:
    """Group rows by prompt, validating each; one-line errors name the row, column or prompt."""
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DatasetSourceError(
            f"{source} has no {missing[0]!r} column (its columns: {', '.join(dataset.column_names)}); offline rows need "
            f"{', '.join(REQUIRED_COLUMNS)} (docs/OFFLINE.md)"
        )
    with_ids = "completion_ids" in dataset.column_names
    groups: dict[str, OfflineGroup] = {}
    for i, row in enumerate(dataset):
        reward, completion = row["reward"], row["completion"]
        if isinstance(reward, bool) or not isinstance(reward, numbers.Real) or not math.isfinite(reward):
            raise DatasetSourceError(f"{source} row {i}: reward {reward!r} is not a finite number")
        if not isinstance(completion, str) or (not completion and not (with_ids and row["completion_ids"])):
            raise DatasetSourceError(f"{source} row {i}: completion {completion!r} is empty or not text; drop the row")
        key = prompt_key(row["prompt"])
        if key not in groups:
            others = {k: v for k, v in row.items() if k not in (*REQUIRED_COLUMNS, "completion_ids")}
            groups[key] = OfflineGroup(row["prompt"], [], [], [], [] if with_ids else None, others)
        group = groups[key]
        group.completions.append(completion)
        group.rewards.append(float(reward))
        group.rows.append(i)
        if with_ids:
            group.completion_ids.append([int(t) for t in row["completion_ids"]])
    for group in groups.values():
        if len(group.rows) < 2:
            raise DatasetSourceError(
                f"{source}: prompt {str(group.prompt)[-80:]!r} has one row (row {group.rows[0]}); CoPG compares "
                "completions of the same prompt, so give every prompt >= 2 rows"
            )
    return list(groups.values())
