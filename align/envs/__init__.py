"""Environments for multi-turn agents (`rollout.source=episodes`): the API, the guard, the registry.

`env.name` is a registered name (`grid`), "path/to/file.py:Class" or "package.module:Class".
`load_environment_class` resolves it; `make_environment(cls, options)` builds one instance per
episode. The API itself is documented in `align/envs/api.py`.
"""

from __future__ import annotations

import difflib

from align.config.plugins import import_object
from align.envs.api import EnvError, Environment, GuardedEnv, normalise_text

__all__ = ["ENVIRONMENTS", "EnvError", "Environment", "GuardedEnv", "load_environment_class", "make_environment",
           "normalise_text", "environment_tasks"]

# Built-in environments: name -> "module:Class".
ENVIRONMENTS = {"grid": "align.envs.grid:GridEnv"}  # a spec like a user's, imported on first use


def load_environment_class(spec: str) -> type:
    """A registered name, "path/to/file.py:Class" or "package.module:Class" -> the class (checked)."""
    if not isinstance(spec, str) or not spec.strip():
        raise EnvError(f"env.name must be a registered environment ({', '.join(ENVIRONMENTS)}) or 'path/to/file.py:Class', got {spec!r}")
    spec = spec.strip()
    if ":" not in spec:
        if spec not in ENVIRONMENTS:
            close = difflib.get_close_matches(spec, list(ENVIRONMENTS), n=2, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise EnvError(f"unknown env.name={spec!r}: {hint}registered: {', '.join(sorted(ENVIRONMENTS))}; "
                           "or give your own as 'path/to/file.py:Class'")
        spec = ENVIRONMENTS[spec]
    cls = import_object(spec, "env.name", EnvError)
    missing = [m for m in ("reset", "step") if not callable(getattr(cls, m, None))]
    if missing:
        raise EnvError(f"env.name={spec!r}: {cls.__name__} has no {' or '.join(missing)}() method; an environment needs "
                       "reset(task) -> str and step(action) -> (observation, reward, done)")
    return cls


def make_environment(cls: type, options: dict, spec: str):
    try:
        return cls(**options)
    except Exception as err:
        raise EnvError(f"env.name={spec!r}: {cls.__name__}(**env.options={options}) raised {type(err).__name__}: {err}") from err


def environment_tasks(cls: type, spec: str, split: str, seed: int, options: dict) -> list:
    """The task list of an environment that ships its own (`tasks(split, seed, **options)` classmethod)."""
    if not callable(getattr(cls, "tasks", None)):
        raise EnvError(f"env.name={spec!r}: {cls.__name__} has no tasks(split, seed) classmethod; "
                       "add one that returns the task list of a split ('train', 'test')")
    try:
        tasks = list(cls.tasks(split, seed, **options))
    except Exception as err:
        raise EnvError(f"env.name={spec!r}: {cls.__name__}.tasks({split!r}) raised {type(err).__name__}: {err}") from err
    if not tasks:
        raise EnvError(f"env.name={spec!r}: {cls.__name__}.tasks({split!r}) returned no tasks")
    return tasks
