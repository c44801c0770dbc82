"""Anthropic HH-style preference data (chosen/rejected dialogues) as prompts with a reference answer.

Source "hh" (the Hub copy, Anthropic/hh-rlhf) or "hh:<file, folder or hub name>". Input rows hold two
full dialogues in HH's text form, identical up to the last assistant turn:

    chosen   "\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: <preferred reply>"
    rejected the same dialogue ending in the dispreferred reply

Output columns: `prompt` (the dialogue before the last assistant turn, as chat messages),
`chosen` and `rejected` (the two final replies). For GRAO: `grao.reference_column=chosen`, with a
judge that compares a completion against it (e.g. an LLM judge as in the paper: `grao.judge=my.py:judge`).
"""

from __future__ import annotations

import re

import datasets

from align.data.loading import DatasetSourceError, _load_path_or_hub, register_task

DEFAULT_HUB_NAME = "Anthropic/hh-rlhf"
_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_dialogue(text: str) -> list[dict[str, str]]:
    """HH text -> [{"role": "user"|"assistant", "content": ...}, ...]; ValueError if it has no turns."""
    parts = _TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise ValueError("does not start with '\\n\\nHuman:'")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[who], "content": content.strip()} for who, content in zip(parts[1::2], parts[2::2])]


def split_preference(chosen: str, rejected: str, row: int) -> dict:
    """One HH row -> {prompt, chosen, rejected}; a one-line error naming the row when it is malformed."""
    try:
        good, bad = parse_dialogue(chosen), parse_dialogue(rejected)
    except ValueError as err:
        raise DatasetSourceError(f"HH row {row}: the dialogue {err}; expected Anthropic HH text") from None
    if good[-1]["role"] != "assistant" or bad[-1]["role"] != "assistant":
        raise DatasetSourceError(f"HH row {row}: chosen and rejected must both end with an '\\n\\nAssistant:' turn")
    if good[:-1] != bad[:-1]:
        raise DatasetSourceError(f"HH row {row}: chosen and rejected differ before the last assistant turn")
    if not good[-1]["content"]:
        raise DatasetSourceError(f"HH row {row}: the chosen reply is empty; a reference answer needs text")
    return {"prompt": good[:-1], "chosen": good[-1]["content"], "rejected": bad[-1]["content"]}


def hh_to_prompts(raw: datasets.Dataset) -> datasets.Dataset:
    missing = [c for c in ("chosen", "rejected") if c not in raw.column_names]
    if missing:
        raise DatasetSourceError(f"HH data has no {missing[0]!r} column; its columns: {', '.join(raw.column_names)}")
    return raw.map(lambda r, i: split_preference(r["chosen"], r["rejected"], i), with_indices=True,
                   remove_columns=raw.column_names)


@register_task("hh")
def load_hh(split: str = "train", *, location: str = DEFAULT_HUB_NAME, cache_dir: str | None = None) -> datasets.Dataset:
    """Load HH-style chosen/rejected data from a local file or folder, or a Hub name, as prompts."""
    return hh_to_prompts(_load_path_or_hub(location, split, cache_dir))
