"""Run a verl reward function (`compute_score(data_source, solution_str, ground_truth, extra_info)`) here.

Spec: `reward.functions=[verl:path/to/file.py:compute_score]` (or `verl:package.module:function`).
verl calls its reward function once per completion with four fields of the row; this adapter does
the same from our per-batch call:

- data_source: the row's `data_source` column (None when the data has none);
- solution_str: the completion text (the assistant message's content for chat data);
- ground_truth: `reward_model["ground_truth"]` (verl's schema), else the `answer` column
  (so `data.answer_column=...` works for any layout);
- extra_info: the row's `extra_info` column, or {} as verl passes.

A verl function returns a number or a dict with a "score" entry (the other entries are verl's
extra logging); either becomes the reward. Anything else is an error naming the function.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any


def verl_reward(compute_score: Callable[..., Any]) -> Callable[..., list[float]]:
    """Wrap a verl `compute_score` into a TRL-signature reward function (same __name__)."""

    def reward(prompts, completions, **columns) -> list[float]:
        n = len(completions)
        truths = _ground_truths(columns, n, compute_score.__name__)
        sources = columns.get("data_source", [None] * n)
        extras = columns.get("extra_info", [None] * n)
        scores = []
        for i, completion in enumerate(completions):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            out = compute_score(data_source=sources[i], solution_str=text, ground_truth=truths[i],
                                extra_info=extras[i] if extras[i] is not None else {})
            scores.append(_score(out, compute_score.__name__))
        return scores

    reward.__name__ = getattr(compute_score, "__name__", "verl_reward")
    reward.__doc__ = compute_score.__doc__
    return reward


def _ground_truths(columns: dict[str, list], n: int, name: str) -> list[Any]:
    if "reward_model" in columns:
        records = columns["reward_model"]
        if all(isinstance(r, dict) and "ground_truth" in r for r in records):
            return [r["ground_truth"] for r in records]
    if "answer" in columns:
        return list(columns["answer"])
    raise ValueError(
        f"verl reward {name!r} needs a ground truth: the data has neither reward_model.ground_truth nor an 'answer' column; "
        "set data.answer_column=<column or dotted.path>"
    )


def _score(out: Any, name: str) -> float:
    if isinstance(out, dict):
        if "score" not in out:
            raise ValueError(f"verl reward {name!r} returned a dict without 'score' (keys: {sorted(out)}); verl expects {{'score': float, ...}}")
        out = out["score"]
    if not isinstance(out, numbers.Real):  # bools count: verl functions often return a match
        raise ValueError(f"verl reward {name!r} returned {type(out).__name__} {out!r:.60}; return a number or {{'score': number}}")
    return float(out)
