"""`final_number`: a lenient numeric answer check for word problems (align/data/word_problems.py).

Which number counts, in order: the last \\boxed{...}, else the last <answer>...</answer> block, else
the whole completion; inside it, the last number (thousands separators and a trailing ".0" are
fine). A small model that solves the problem but forgets the box still earns the reward, and one
that boxes a number and then rambles on is judged on the boxed one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewards.format import completion_text, extract_answer_tag
from rewards.registry import register

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced; None when there is no closed one."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j]
        start = text.rfind("\\boxed{", 0, start)  # unclosed: try an earlier one
    return None


def extract_final_number(text: str) -> float | None:
    """The number a completion answers with (module docstring); None when it names none."""
    for source in (_last_boxed(text), extract_answer_tag(text), text):
        if source is None:
            continue
        numbers = _NUMBER.findall(source)
        if numbers:
            return float(numbers[-1].replace(",", ""))
        if source is not text:  # a box or tag without a number: no answer, don't fall back
            return None
    return None


@register("final_number")
def final_number(prompts: list, completions: list, answer: Sequence[Any] | None = None, **kwargs) -> list[float | None]:
    """1.0 when the completion's final number equals the `answer` column, else 0.0; None for an empty gold."""
    if answer is None:
        raise ValueError("final_number needs an 'answer' column; set data.answer_column=<your column>")
    rewards: list[float | None] = []
    for completion, gold in zip(completions, answer, strict=True):
        if gold is None or not str(gold).strip():
            rewards.append(None)
            continue
        value = extract_final_number(completion_text(completion))
        rewards.append(1.0 if value is not None and abs(value - float(str(gold).replace(",", ""))) < 1e-6 else 0.0)
    return rewards
