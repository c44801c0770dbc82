"""The reward runner the trainer calls: load reward functions from specs, call them, combine their scores.

Semantics follow TRL 1.16 (`GRPOTrainer._calculate_rewards` and the weighted sum after it):

- each function gets `prompts`, `completions`, `completion_ids`, `trainer_state`, `log_extra`, `log_metric`
  and every dataset column as a keyword (columns named prompt/completion/completion_ids are not passed twice);
- None means "not applicable" and becomes NaN for that function;
- total[i] = nansum over functions of weight * reward[i]. A completion where every function returned None
  gets total 0.0 (nansum of nothing) and is flagged in `RewardResult.unscorable`; TRL 1.16 also marks such
  rows NaN so the group baseline skips them and their advantage is 0, which the trainer does with this flag.

Model-based rewards (`rm:`, `judge:`; rewards/context.py) are objects flagged `in_process`: they hold a
model on the trainer's device and may run collectives, so they are called in this process and thread,
without the helper thread and time limit that plain functions get. Plain functions score untrusted text
and may be moved elsewhere; model rewards never are.

Unlike TRL, a bad return value (wrong length, not a number, NaN, inf) or an exception stops training with
a one-line `RewardFunctionError` naming the function, the problem and the sample, and each call has a
time limit.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import inspect
import math
import numbers
import os
import posix
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from align.errors import UserError
from rewards import workers
from rewards.registry import get_reward_function

# Columns TRL never forwards as keywords: they are passed explicitly (or are the completion itself).
_RESERVED_COLUMNS = ("prompt", "completion", "completion_ids")
# Rewards become float32 tensors for the group statistics: a variance of 1e300 (or of 1e20) is inf there,
# and with seven significant digits a reward of 1e15 has no spread left to learn from.
MAX_ABS_REWARD = 1e9


class RewardFunctionError(UserError, RuntimeError):
    """A reward function failed, misbehaved or ran out of time; the message is one line."""


class _ExitFromReward(BaseException):
    """os._exit called inside a reward function; a BaseException so the function's own `except Exception` lets it by."""

    def __init__(self, name: str, status: Any):
        super().__init__(name, status)
        self.name, self.status = name, status


# The reward function the current thread (or asyncio task) is calling, for `_guarded_exit`.
_calling: contextvars.ContextVar[str | None] = contextvars.ContextVar("reward_function_being_called", default=None)
_process_exit = os._exit
_trainer_pid = os.getpid()


def _guarded_exit(status: int) -> None:
    # os._exit skips every handler, so a reward calling it ended the run with status 0, no message and no
    # model. Inside a reward call it raises instead; anywhere else (end_launched_process) it exits as before.
    # A child forked inside a reward (multiprocessing's default on Linux) inherits the context variable and
    # ends with os._exit: it must exit, not raise and carry on as a second trainer.
    name = _calling.get()
    if name is None or os.getpid() != _trainer_pid:
        _process_exit(status)
    raise _ExitFromReward(name, status)


def _exit_error(exit: _ExitFromReward) -> RewardFunctionError:
    return RewardFunctionError(
        f"reward function {exit.name!r} called os._exit({exit.status}), which would end the training run without a "
        "word or a model; return one float or None per completion (raise an exception to stop the run)"
    )


def _call_guarded(function: RewardFunction, kwargs: dict[str, Any]) -> Any:
    token = _calling.set(function.name)
    try:
        return function.fn(**kwargs)
    finally:
        _calling.reset(token)


@dataclass
class RewardFunction:
    """A reward function with the name it is reported under and its weight in the total."""

    name: str
    fn: Callable[..., Any]
    weight: float = 1.0


@dataclass
class RewardResult:
    """Rewards for one batch of N completions.

    total: [N] weighted nansum over functions. per_function: name -> [N] raw rewards (None = not applicable).
    unscorable: [N] True where every function returned None. extra_columns / logged_metrics: what the
    functions sent through TRL's `log_extra(column, values)` and `log_metric(name, value)` hooks.
    timeouts: completions whose scoring ran past its limit in a worker process (rewards/workers.py) and
    scored None instead; a worker that died counts too.
    """

    total: list[float]
    per_function: dict[str, list[float | None]]
    unscorable: list[bool]
    extra_columns: dict[str, list] = field(default_factory=dict)
    logged_metrics: dict[str, list[float]] = field(default_factory=dict)
    timeouts: int = 0


def load_reward_functions(
    specs: Sequence[str],
    weights: Sequence[float] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> list[RewardFunction]:
    """Resolve reward specs (registry names, "file.py:fn", "module:fn") into weighted `RewardFunction`s.

    options: keyword arguments bound to a function, keyed by its spec, e.g. {"length_reward": {"l_max": 512}}.
    """
    if isinstance(specs, str):
        raise RewardFunctionError(f"reward specs must be a list of strings, got the single string {specs!r}; wrap it in a list")
    if not specs:
        raise RewardFunctionError("no reward functions given; set rewards.functions=[math_accuracy, ...] in the recipe")
    for spec in specs:  # a misspelt name is the real problem: report it before any count mismatch
        if isinstance(spec, str) and ":" not in spec:
            get_reward_function(spec)
    if weights is None:
        weights = [1.0] * len(specs)
    if len(weights) != len(specs):
        raise RewardFunctionError(
            f"{len(weights)} reward weights for {len(specs)} reward functions {list(specs)}; give one weight per function"
        )
    options = dict(options or {})
    unknown = sorted(set(options) - set(specs))
    if unknown:
        raise RewardFunctionError(f"reward options given for {unknown}, which are not among the reward functions {list(specs)}")

    functions: list[RewardFunction] = []
    for spec, weight in zip(specs, weights):
        if not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise RewardFunctionError(f"reward weight for {spec!r} must be a finite number, got {weight!r}")
        fn = get_reward_function(spec)
        if spec in options:  # a model reward takes its options at construction, a function per call
            fn = fn.configure(**options[spec]) if _in_process(fn) else functools.partial(fn, **options[spec])
        name = _display_name(spec, fn)
        if any(existing.name == name for existing in functions):
            raise RewardFunctionError(f"reward function {name!r} is listed twice; list each function once")
        functions.append(RewardFunction(name=name, fn=fn, weight=float(weight)))
    return functions


def compute_rewards(
    functions: Sequence[RewardFunction],
    prompts: Sequence[Any],
    completions: Sequence[Any],
    columns: dict[str, Sequence[Any]],
    completion_ids: Sequence[Sequence[int]],
    trainer_state: Any = None,
    timeout_s: float | None = 60.0,
) -> RewardResult:
    """Call every reward function on N completions and combine their rewards (module docstring for the rules).

    prompts, completions, completion_ids and each column: N entries, aligned (prompt i produced completion i).
    timeout_s: limit per function call (None: no limit). A synchronous function runs in a helper thread so
    the limit can be enforced; a call that overruns is reported and its thread abandoned (Python cannot stop it).
    """
    n = len(completions)
    if len(prompts) != n or len(completion_ids) != n:
        raise RewardFunctionError(
            f"compute_rewards: {len(prompts)} prompts, {n} completions and {len(completion_ids)} completion_ids; they must align"
        )
    for column, values in columns.items():
        if column not in _RESERVED_COLUMNS and len(values) != n:
            raise RewardFunctionError(f"compute_rewards: column {column!r} has {len(values)} values for {n} completions")

    extra_columns: dict[str, list] = {}
    logged_metrics: dict[str, list[float]] = {}
    data = {key: values for key, values in columns.items() if key not in _RESERVED_COLUMNS}
    data.update(prompts=prompts, completions=completions, completion_ids=completion_ids)
    hooks = dict(
        trainer_state=trainer_state,
        log_extra=lambda column, values: extra_columns.setdefault(column, []).extend(values),
        log_metric=lambda name, value: logged_metrics.setdefault(name, []).append(float(value)),
    )

    def kwargs_for_one_call() -> dict[str, Any]:
        # Each function gets its own copies: one that edits its inputs in place (completions[i] = ...)
        # must not change what the next function scores, nor the batch the trainer keeps.
        copies = {key: _own_copy(values) for key, values in data.items() if key != "completion_ids"}
        # token ids are ints by contract: one list() each (checking 256k ints costs 30 ms a call)
        return {**copies, "completion_ids": [list(ids) for ids in completion_ids], **hooks}

    # Idempotent; plain attributes, so installing them costs nothing per call. posix._exit is the same
    # function under the module os imports it from: guarding os._exit alone left that door open.
    os._exit = posix._exit = _guarded_exit
    stopped_before = workers.timeouts() + workers.crashes()
    raw: dict[str, Any] = {}
    async_functions = [f for f in functions if _is_async(f.fn)]
    for function in functions:
        if not _is_async(function.fn):
            raw[function.name] = _call_sync(function, kwargs_for_one_call(), timeout_s)
    if async_functions:
        raw.update(_call_async(async_functions, kwargs_for_one_call, timeout_s))

    per_function = {f.name: _validated(f.name, raw[f.name], n) for f in functions}
    total: list[float] = []
    unscorable: list[bool] = []
    for i in range(n):
        scored = [(f.weight, per_function[f.name][i]) for f in functions if per_function[f.name][i] is not None]
        unscorable.append(not scored)
        total.append(float(sum(weight * value for weight, value in scored)))
    timeouts = workers.timeouts() + workers.crashes() - stopped_before
    return RewardResult(total, per_function, unscorable, extra_columns, logged_metrics, timeouts)


def reward_metrics(result: RewardResult) -> dict[str, float]:
    """Mean and std (Bessel, as TRL's nanstd) per function over its non-None rewards, plus the total's.

    Keys: "reward/<name>/mean", "reward/<name>/std", "reward/scorable_mean", "reward/scorable_std"
    (the total over scorable completions), "reward/unscorable_frac" and "reward/timeouts" (completions
    whose scoring was stopped). A statistic with too few values is NaN, as in TRL.
    """
    metrics: dict[str, float] = {}
    for name, values in result.per_function.items():
        present = [v for v in values if v is not None]
        metrics[f"reward/{name}/mean"], metrics[f"reward/{name}/std"] = _mean_std(present)
    scorable = [t for t, skip in zip(result.total, result.unscorable) if not skip]
    metrics["reward/scorable_mean"], metrics["reward/scorable_std"] = _mean_std(scorable)
    metrics["reward/unscorable_frac"] = sum(result.unscorable) / len(result.unscorable) if result.unscorable else 0.0
    metrics["reward/timeouts"] = float(result.timeouts)
    return metrics


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


_ATOMS = (str, bytes, int, float, bool, type(None))


def _own_copy(values: Sequence[Any]) -> list:
    """A copy of `values` that shares nothing mutable with it.

    The usual inputs are lists of strings or of token-id lists: copied one level (or two) directly, as
    copy.deepcopy would walk every token id through its memo for the same result.
    """
    if all(isinstance(v, _ATOMS) for v in values):
        return list(values)
    if all(isinstance(v, (list, tuple)) and all(isinstance(x, _ATOMS) for x in v) for v in values):
        return [list(v) for v in values]
    return copy.deepcopy(list(values))


def _display_name(spec: str, fn: Callable) -> str:
    # Registered names are what users wrote in the recipe; for file/module specs use the function's name.
    if ":" not in spec:
        return spec
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


def _is_async(fn: Callable) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _in_process(fn: Callable) -> bool:
    return bool(getattr(fn, "in_process", False))


def _call_sync(function: RewardFunction, kwargs: dict[str, Any], timeout_s: float | None) -> Any:
    if timeout_s is None or _in_process(function.fn):
        try:
            return _call_guarded(function, kwargs)
        except _ExitFromReward as exit:
            raise _exit_error(exit) from None
        except (Exception, SystemExit) as error:  # sys.exit() here would end the run with its status, silently
            raise RewardFunctionError(f"reward function {function.name!r} raised {_one_line(error)}") from error

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = _call_guarded(function, kwargs)
        except BaseException as error:  # re-raised in the caller's thread below
            outcome["error"] = error

    # A daemon thread: if the call hangs, the process can still exit.
    worker = threading.Thread(target=target, name=f"reward:{function.name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise RewardFunctionError(
            f"reward function {function.name!r} took longer than timeout_s={timeout_s:g}s; make it faster or raise rewards.timeout_s"
        )
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, _ExitFromReward):
            raise _exit_error(error) from None
        raise RewardFunctionError(f"reward function {function.name!r} raised {_one_line(error)}") from error
    return outcome["value"]


def _call_async(functions: list[RewardFunction], make_kwargs: Callable[[], dict[str, Any]],
                timeout_s: float | None) -> dict[str, Any]:
    """Run the async reward functions concurrently on a fresh event loop in a helper thread.

    The helper thread keeps this working when the caller already runs an event loop (a notebook, an agent env).
    """

    async def call(function: RewardFunction) -> Any:
        _calling.set(function.name)  # this task's own context: the other functions' tasks keep theirs
        try:
            return await asyncio.wait_for(function.fn(**make_kwargs()), timeout_s)
        except _ExitFromReward as exit:
            raise _exit_error(exit) from None
        except TimeoutError as error:
            raise RewardFunctionError(
                f"reward function {function.name!r} took longer than timeout_s={timeout_s:g}s; make it faster or raise rewards.timeout_s"
            ) from error
        except RewardFunctionError:
            raise
        except Exception as error:
            raise RewardFunctionError(f"reward function {function.name!r} raised {_one_line(error)}") from error

    async def gather_all() -> list[Any]:
        return await asyncio.gather(*(call(f) for f in functions))

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(gather_all())
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=target, name="rewards:async", daemon=True)
    worker.start()
    # An async function that blocks the loop (sync work inside) defeats wait_for; the join limit catches it.
    worker.join(None if timeout_s is None else timeout_s + 5.0)
    if worker.is_alive():
        names = ", ".join(repr(f.name) for f in functions)
        raise RewardFunctionError(f"async reward functions {names} blocked their event loop past timeout_s={timeout_s:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return {f.name: value for f, value in zip(functions, outcome["value"])}


def _validated(name: str, rewards: Any, n: int) -> list[float | None]:
    if isinstance(rewards, (str, bytes, dict)) or not hasattr(rewards, "__len__") or not hasattr(rewards, "__iter__"):
        raise RewardFunctionError(
            f"reward function {name!r} returned a {type(rewards).__name__}; it must return a list with one float or None per completion"
        )
    values = list(rewards)
    if len(values) != n:
        raise RewardFunctionError(
            f"reward function {name!r} returned {len(values)} rewards for {n} completions; return exactly one per completion"
        )
    checked: list[float | None] = []
    for index, value in enumerate(values):
        if value is None:
            checked.append(None)
            continue
        if not isinstance(value, numbers.Real):
            raise RewardFunctionError(
                f"reward function {name!r} returned {type(value).__name__} {value!r:.60} at sample {index}; return a float or None"
            )
        value = float(value)
        if not math.isfinite(value):
            raise RewardFunctionError(
                f"reward function {name!r} returned {value} at sample {index}; return a finite float, or None for 'not applicable'"
            )
        if abs(value) > MAX_ABS_REWARD:
            raise RewardFunctionError(
                f"reward function {name!r} returned {value:g} at sample {index}; rewards must be within +-{MAX_ABS_REWARD:g} "
                "(the advantages are float32: larger ones overflow or lose every difference); scale the reward down"
            )
        checked.append(value)
    return checked
