"""A registry of reward functions by name, and the loader that turns a recipe's spec string into a callable.

A reward function has TRL's signature, so functions written for TRL work here unchanged::

    def my_reward(prompts, completions, **kwargs) -> list[float | None]: ...

kwargs hold every dataset column (one list per column, aligned with completions), `completion_ids`
(list[list[int]]) and `trainer_state` (may be None). None means "not applicable to this sample".

Three spec forms are accepted by `get_reward_function`:

- a registered name, e.g. "math_accuracy" (see `registered_names()`),
- a file and a function, e.g. "path/to/my_rewards.py:my_reward",
- a module and a function, e.g. "my_package.rewards:my_reward",
- any of these after "verl:" for a verl `compute_score(data_source, solution_str, ground_truth, extra_info)`
  (see rewards/verl.py), e.g. "verl:path/to/gsm8k.py:compute_score".

Model-based rewards have a prefix instead (`MODEL_REWARDS`): "rm:PATH_OR_HUB_ID" (a reward model,
rewards/models.py) and "judge:PATH_OR_HUB_ID" or "judge:self" (an LLM judge, rewards/judge.py). They
return an unloaded `rewards.context.ModelReward`, which the trainer binds to its device and engine.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from align.errors import UserError

F = TypeVar("F", bound=Callable)

# Modules that hold built-in rewards; imported on the first look-up so `import rewards` stays cheap
# (math-verify pulls in sympy). A module listed here that does not exist yet is skipped.
BUILTIN_MODULES: tuple[str, ...] = (
    "rewards.math",
    "rewards.format",
    "rewards.length",
    "rewards.code",
    "rewards.geometry",
    "rewards.word_problems",
)

# Spec prefix -> "module:class" of a model-based reward (imported on use: they pull in transformers).
MODEL_REWARDS = {"rm": "rewards.models:RewardModel", "judge": "rewards.judge:Judge"}

_REGISTRY: dict[str, Callable] = {}
_builtins_loaded = False


class RewardSpecError(UserError, ValueError):
    """A reward spec (name, file:function or module:function) that cannot be resolved."""


def register(name: str) -> Callable[[F], F]:
    """Decorator that registers a reward function under `name` and returns it unchanged.

    Registering the same function object twice is harmless (modules can be re-imported); a
    different function under a taken name is an error, so two plugins never silently shadow each other.
    """
    if not name or not isinstance(name, str):
        raise RewardSpecError(f"reward name must be a non-empty string, got {name!r}")

    def decorator(fn: F) -> F:
        if not callable(fn):
            raise RewardSpecError(f"register({name!r}) was applied to {fn!r}, which is not callable")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not fn and _qualname(existing) != _qualname(fn):
            raise RewardSpecError(
                f"reward name {name!r} is already registered by {_qualname(existing)}; pick another name for {_qualname(fn)}"
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def registered_names() -> list[str]:
    """All registered reward names (built-ins included), sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_reward_function(spec: str) -> Callable:
    """Resolve a spec ("name", "path/to/file.py:function" or "package.module:function") to a callable."""
    if not isinstance(spec, str) or not spec.strip():
        raise RewardSpecError(f"reward spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec.startswith("verl:"):  # verl's compute_score(data_source, solution_str, ground_truth, extra_info)
        from rewards.verl import verl_reward

        return verl_reward(get_reward_function(spec.removeprefix("verl:")))
    prefix, _, target = spec.partition(":")
    if prefix in MODEL_REWARDS:  # before file/module specs: "rm:org/model" is not a module
        module, _, cls = MODEL_REWARDS[prefix].partition(":")
        return getattr(importlib.import_module(module), cls)(target)
    if ":" in spec:
        location, _, attr = spec.rpartition(":")
        if not location or not attr:
            raise RewardSpecError(f"reward spec {spec!r} must look like 'path/to/file.py:function' or 'package.module:function'")
        if location.endswith(".py") or "/" in location or "\\" in location:
            module = _import_file(location, spec)
        else:
            module = _import_module(location, spec)
        return _function_from_module(module, attr, spec)

    _load_builtins()
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    close = difflib.get_close_matches(spec, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise RewardSpecError(
        f"unknown reward {spec!r}: {hint}registered: {', '.join(sorted(_REGISTRY)) or '(none)'}; "
        "or give your own as 'path/to/file.py:function' or 'package.module:function'"
    )


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    for module_name in BUILTIN_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue
        # An existing module that fails to import is a real bug: let its error surface.
        importlib.import_module(module_name)
    _builtins_loaded = True


def _import_file(location: str, spec: str):
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise RewardSpecError(f"reward spec {spec!r}: file {str(path)!r} does not exist; give a path to an existing .py file")
    # A name derived from the full path keeps two files with the same stem apart.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"_align_user_rewards_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise RewardSpecError(f"reward spec {spec!r}: cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before exec so dataclasses and pickling inside the file can find their module.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _import_module(location: str, spec: str):
    try:
        return importlib.import_module(location)
    except ModuleNotFoundError as err:
        if err.name is not None and location.startswith(err.name):
            raise RewardSpecError(
                f"reward spec {spec!r}: module {location!r} is not importable; install it or use 'path/to/file.py:function'"
            ) from err
        raise


def _function_from_module(module, attr: str, spec: str) -> Callable:
    fn = getattr(module, attr, None)
    if fn is None:
        available = sorted(
            name for name, value in vars(module).items() if callable(value) and not name.startswith("_") and not inspect.isclass(value)
        )
        close = difflib.get_close_matches(attr, available, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise RewardSpecError(
            f"reward spec {spec!r}: {module.__name__} has no attribute {attr!r}; {hint}callables there: {', '.join(available) or '(none)'}"
        )
    if not callable(fn):
        raise RewardSpecError(f"reward spec {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


def _qualname(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
