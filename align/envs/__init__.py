"""Environments for multi-turn agents (`rollout.source=episodes`): the API, the guard, the registry.

`env.name` is a registered name (`grid`), "path/to/file.py:Class" or "package.module:Class".
`load_environment_class` resolves it; `make_environment(cls, options)` builds one instance per
episode. The API itself is documented in `align/envs/api.py`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from align.envs.api import EnvError, Environment, GuardedEnv, normalise_text

__all__ = ["ENVIRONMENTS", "EnvError", "Environment", "GuardedEnv", "load_environment_class", "make_environment",
           "normalise_text", "environment_tasks"]

# Built-in environments: name -> "module:Class" (imported on first use).
ENVIRONMENTS = {"grid": "align.envs.grid:GridEnv"}


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
    location, _, attr = spec.rpartition(":")
    if location.endswith(".py") or "/" in location:
        module = _import_file(location, spec)
    else:
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as err:
            raise EnvError(f"env.name={spec!r}: module {location!r} is not importable; use 'path/to/file.py:Class'") from err
    cls = getattr(module, attr, None)
    if cls is None:
        raise EnvError(f"env.name={spec!r}: {module.__name__} has no attribute {attr!r}")
    missing = [m for m in ("reset", "step") if not callable(getattr(cls, m, None))]
    if missing:
        raise EnvError(f"env.name={spec!r}: {attr} has no {' or '.join(missing)}() method; an environment needs "
                       "reset(task) -> str and step(action) -> (observation, reward, done)")
    return cls


def _import_file(location: str, spec: str):
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise EnvError(f"env.name={spec!r}: file {str(path)!r} does not exist")
    # A module name derived from the full path keeps two files with the same stem apart.
    name = f"_align_user_env_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise EnvError(f"env.name={spec!r}: cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before exec, so dataclasses inside the file find their module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


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
