"""The environment API for agents, and the guard that makes a user environment fail loudly.

An environment is a plain class (no base class needed), in the shape TRL / verl agent users know:

    class MyEnv:
        def __init__(self, **options): ...                    # env.options from the config
        def reset(self, task) -> str                          # the first observation (user message)
        def step(self, action: str) -> (str, float, bool)     # observation, reward, done
        # optional:
        def state_key(self, observation: str) -> Hashable     # graph node identity (SALT)
        def action_key(self, action: str) -> Hashable         # graph edge label (SALT)
        @classmethod
        def tasks(cls, split: str, seed: int) -> list         # built-in task list ("train" / "test")
        max_turns: int                                        # default episode length cap

One instance runs one episode: the loop builds G instances per task (a group) and calls `reset(task)`
on each. The episode's outcome reward is the sum of the rewards `step` returned.

State and action keys decide which steps SALT merges. The defaults are the normalised text
(lower case, runs of white space collapsed), so two trajectories that see the same observation and
answer with the same text share an edge. An environment whose observations carry turn counters or
other per-episode noise should override `state_key` with its real state. Under
rollout.max_staleness >= 1 a key goes into the checkpoint as JSON: return a str, int, float, bool,
None or a tuple of them (a frozenset or an object is refused in one line when the episode is played).

Instances are built and stepped on the trainer's main thread, or, under rollout.max_staleness >= 1,
in its generate-ahead thread (one batch of episodes at a time, never two at once); each call may
also run in a watchdog thread of its own (`env.step_timeout_s`). So an environment must not rely
on running in the main thread (no `signal` handlers).
"""

from __future__ import annotations

import math
import numbers
import re
import threading
from collections.abc import Hashable
from typing import Any, Protocol, runtime_checkable


class EnvironmentError_(RuntimeError):
    """An environment raised, returned something malformed, or hung; the message names it and the call."""


# The public name; `EnvironmentError` is a builtin alias of OSError, so we do not shadow it.
EnvError = EnvironmentError_


@runtime_checkable
class Environment(Protocol):
    def reset(self, task: Any) -> str: ...

    def step(self, action: str) -> tuple[str, float, bool]: ...


_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """The default state / action key: lower case, white space collapsed, ends stripped."""
    return _SPACE.sub(" ", text).strip().lower()


def _call_with_timeout(fn, args: tuple, timeout_s: float | None, what: str):
    """fn(*args), raising EnvError if it takes longer than timeout_s.

    The call runs in a daemon thread: a step() stuck in a loop cannot be interrupted from Python, but
    the trainer stops waiting, raises, and the stuck thread does not keep the process alive at exit.
    """
    if not timeout_s:
        return fn(*args)
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True, name=f"env-{what}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise EnvError(f"{what} did not return within env.step_timeout_s={timeout_s:g}s; fix the environment "
                       f"(an endless loop?) or raise env.step_timeout_s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class GuardedEnv:
    """One episode of a user environment bound to its task, with every call checked.

    `reset()` / `step(text)` have the signatures `align.rollout.multiturn.run_episodes` expects.
    Any exception, a wrong return type, a non-finite reward or a call that exceeds `timeout_s`
    becomes an `EnvError` naming the environment, the method, the task and the turn. The guard
    also records the observation each action answered, and the state / action keys of each step.
    """

    def __init__(self, env, task: Any, name: str, timeout_s: float | None = 30.0):
        self.env, self.task, self.name, self.timeout_s = env, task, name, timeout_s
        self.observations: list[str] = []  # observations[t] = what action t saw
        self.keys: list[tuple[Hashable, Hashable]] = []  # (state_key, action_key) per step

    def _where(self, method: str) -> str:
        return f"env {self.name}: {method} (task {str(self.task)[:80]!r}, turn {len(self.keys) + 1})"

    def _call(self, method: str, *args):
        where = self._where(f"{method}()")
        try:
            return _call_with_timeout(getattr(self.env, method), args, self.timeout_s, where)
        except EnvError:
            raise
        except Exception as err:
            raise EnvError(f"{where} raised {type(err).__name__}: {err}") from err

    def reset(self) -> str:
        observation = self._call("reset", self.task)
        if not isinstance(observation, str):
            raise EnvError(f"{self._where('reset()')} must return the first observation as str, got {type(observation).__name__}")
        self.observations = [observation]
        return observation

    def step(self, action: str) -> tuple[str, float, bool]:
        if len(self.observations) <= len(self.keys):
            raise EnvError(f"{self._where('step()')} called before reset() or after the episode ended")
        state, out = self.observations[-1], self._call("step", action)
        if not (isinstance(out, tuple | list) and len(out) == 3):
            raise EnvError(f"{self._where('step()')} must return (observation: str, reward: float, done: bool), "
                           f"got {type(out).__name__} {str(out)[:80]}")
        observation, reward, done = out
        if not isinstance(observation, str):
            raise EnvError(f"{self._where('step()')} returned an observation of type {type(observation).__name__}; it must be str")
        if isinstance(reward, bool) or not isinstance(reward, numbers.Real) or not math.isfinite(float(reward)):
            raise EnvError(f"{self._where('step()')} returned reward {reward!r}; it must be a finite number")
        if not isinstance(done, bool | int) or isinstance(done, float):
            raise EnvError(f"{self._where('step()')} returned done={done!r}; it must be a bool")
        self.keys.append((self.state_key(state), self.action_key(action)))
        self.observations.append(observation)
        return observation, float(reward), bool(done)

    def state_key(self, observation: str) -> Hashable:
        key = self._call("state_key", observation) if hasattr(self.env, "state_key") else normalise_text(observation)
        return _hashable(key, self._where("state_key()"))

    def action_key(self, action: str) -> Hashable:
        key = self._call("action_key", action) if hasattr(self.env, "action_key") else normalise_text(action)
        return _hashable(key, self._where("action_key()"))


def _hashable(key, where: str) -> Hashable:
    try:
        hash(key)
    except TypeError:
        raise EnvError(f"{where} returned an unhashable {type(key).__name__}; return a str, int or tuple") from None
    return key
