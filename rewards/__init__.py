"""Verifiable reward functions with TRL's signature: `f(prompts, completions, **kwargs) -> list[float | None]`.

Built-in rewards (importing this package is cheap; the modules load on first look-up):

- `math_accuracy`, `math_accuracy_relaxed`          rewards/math.py   (math-verify, option letters, 2% relaxed match)
- `think_answer_format`, `answer_tag_format`        rewards/format.py
- `length_reward`                                   rewards/length.py (min(L, l_max) / l_max over completion tokens)
- `code_passes_tests`                               rewards/code.py   (runs code in a sandboxed subprocess)
- whatever rewards/geometry.py registers, when that module exists.

Add your own with the `register(name)` decorator, or point a recipe at "path/to/file.py:function".
"""

from rewards.registry import (
    BUILTIN_MODULES,
    RewardSpecError,
    get_reward_function,
    register,
    registered_names,
)

__all__ = ["BUILTIN_MODULES", "RewardSpecError", "get_reward_function", "register", "registered_names"]
