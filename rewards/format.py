"""Format rewards: does the completion use the <think>...</think><answer>...</answer> layout?

Also the two text helpers the other reward modules share: `completion_text` (plain or
conversational completion -> str) and `extract_answer_tag` (content of the <answer> block).
"""

from __future__ import annotations

import re
from typing import Any

from rewards.registry import register

# The text between tags may not contain another think/answer tag, so "<answer>1</answer><answer>2</answer>"
# or a nested "<think><think>" is malformed rather than silently accepted.
_NO_TAG = r"(?:(?!</?think>|</?answer>).)*"

# Exactly one think block, then anything tag-free, then exactly one answer block, and nothing after the
# answer but whitespace. Leading whitespace is allowed (some templates emit a newline first).
THINK_ANSWER_PATTERN = re.compile(
    rf"\s*<think>{_NO_TAG}</think>{_NO_TAG}<answer>{_NO_TAG}</answer>\s*",
    re.DOTALL,
)

# One answer block, and nothing after it but whitespace (answer_tag_format also wants non-blank content).
ANSWER_TAG_PATTERN = re.compile(rf"{_NO_TAG}<answer>(?P<answer>{_NO_TAG})</answer>\s*", re.DOTALL)

_ANSWER_CONTENT = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The generated text of one completion: a str, or TRL's conversational form [{"role": "assistant", "content": str}]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict) and "content" in completion[-1]:
        content = completion[-1]["content"]
        if isinstance(content, str):
            return content
        # Multimodal content blocks: keep the text parts.
        if isinstance(content, list):
            return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    raise TypeError(
        f"a completion must be a str or a list of {{'role', 'content'}} messages, got {type(completion).__name__}: {completion!r:.80}"
    )


def extract_answer_tag(text: str) -> str | None:
    """Content of the last <answer>...</answer> block, stripped; None when there is no complete block."""
    matches = _ANSWER_CONTENT.findall(text)
    return matches[-1].strip() if matches else None


@register("think_answer_format")
def think_answer_format(prompts: list, completions: list, **kwargs) -> list[float]:
    """1.0 when a completion is `<think>...</think> ... <answer>...</answer>` (see THINK_ANSWER_PATTERN), else 0.0."""
    return [1.0 if THINK_ANSWER_PATTERN.fullmatch(completion_text(c)) else 0.0 for c in completions]


@register("answer_tag_format")
def answer_tag_format(prompts: list, completions: list, **kwargs) -> list[float]:
    """1.0 when a completion ends with one non-empty <answer>...</answer> block (no think block needed), else 0.0."""
    rewards = []
    for completion in completions:
        match = ANSWER_TAG_PATTERN.fullmatch(completion_text(completion))
        rewards.append(1.0 if match and match.group("answer").strip() else 0.0)
    return rewards
