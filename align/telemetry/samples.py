"""What a step's samples show: the prompt as the model saw it and the whole group of G completions.

GRPO learns from differences inside a group, so a sample is one prompt (the chat template applied,
decoded from the exact token ids the engine got) with every completion, its reward (total and per
reward function) and its advantage. `RunLogger.log_samples` writes these to samples.jsonl and the
console table.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def group_samples(tokenizer, rows: list[dict], flat: list, rewards: torch.Tensor, advantages: torch.Tensor,
                  components: dict[str, torch.Tensor], limit: int) -> list[dict[str, Any]]:
    """The first `limit` prompts of a batch as samples.

    rows: the P dataset rows; flat: their P x G completions (group-major, as generated);
    rewards, advantages: [P, G]; components: reward-function name -> [P, G] (nan = not applicable).
    """
    g = rewards.shape[1]
    samples = []
    for i, row in enumerate(rows[:limit]):
        group = flat[i * g : (i + 1) * g]
        completions = []
        for j, completion in enumerate(group):
            per_function = {name: _number(values[i, j]) for name, values in components.items()}
            completions.append({
                "text": completion.text,
                "reward": float(rewards[i, j]),
                "advantage": float(advantages[i, j]),
                "rewards": per_function,
                "tokens": len(completion.token_ids),
                "finish_reason": completion.finish_reason,
            })
        sample = {"prompt": tokenizer.decode(group[0].prompt_ids, skip_special_tokens=False), "completions": completions}
        if "answer" in row:
            sample["answer"] = row["answer"]
        samples.append(sample)
    return samples


def _number(value: torch.Tensor) -> float | None:
    v = float(value)
    return None if math.isnan(v) else v
