"""Length reward: min(L, l_max) / l_max, with L the number of completion tokens (GCPO's R_len before its weight).

L is counted from `completion_ids`, i.e. with the policy tokenizer, as GeometryZero does. The weight
(0.5 in GCPO) is the reward's weight in the recipe, not part of this function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rewards.registry import register

DEFAULT_L_MAX = 900  # GeometryZero's `length_reward_func` default, in response tokens


def length_reward(
    prompts: list,
    completions: list,
    completion_ids: Sequence[Sequence[int]] | None = None,
    l_max: int = DEFAULT_L_MAX,
    **kwargs,
) -> list[float]:
    """min(len(ids), l_max) / l_max per completion, in [0, 1]."""
    if completion_ids is None:
        raise ValueError("length_reward needs `completion_ids` (token ids per completion); the caller passed none")
    if not isinstance(l_max, int) or isinstance(l_max, bool) or l_max <= 0:
        raise ValueError(f"length_reward: l_max must be a positive int, got {l_max!r}")
    return [min(len(ids), l_max) / l_max for ids in completion_ids]


def make_length_reward(l_max: int) -> Callable[..., list[float]]:
    """A length reward with its own cap, named `length_reward_<l_max>` (for recipes that want two caps)."""
    if not isinstance(l_max, int) or isinstance(l_max, bool) or l_max <= 0:
        raise ValueError(f"make_length_reward: l_max must be a positive int, got {l_max!r}")

    def capped_length_reward(prompts: list, completions: list, **kwargs) -> list[float]:
        return length_reward(prompts, completions, l_max=l_max, **kwargs)

    capped_length_reward.__name__ = f"length_reward_{l_max}"
    capped_length_reward.__doc__ = f"min(L, {l_max}) / {l_max} with L = completion tokens."
    return capped_length_reward


register("length_reward")(length_reward)
