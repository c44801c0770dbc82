"""Score untrusted text in worker processes that are killed when one item runs past its time limit.

Parsing model output can run away: math-verify hands `9^{9^{9^{9}}}` to sympy, which computes the power
in C while holding the GIL, so no thread, signal or `asyncio` timeout in the training process can stop it.
A worker process can always be killed. `score_each` sends one item per task to a pool of spawned workers
(pebble's ProcessPool, reused across calls: the imports are paid once per worker, not per completion); an
item past `timeout_s` has its worker killed and replaced, and scores None ("not applicable"), counted in
`timeouts()` (the trainer logs it as `reward/timeouts`). A worker that dies (out of memory, a segfault in
a parser) likewise scores None and is counted in `crashes()`.

Workers are started with "spawn": forking a trainer that holds CUDA contexts and threads is unsafe.
ALIGN_REWARD_WORKERS sets their number (default 2).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pebble import ProcessExpired, ProcessPool

_lock = threading.Lock()
_pool: ProcessPool | None = None
_counts = {"timeouts": 0, "crashes": 0}


def worker_count() -> int:
    value = os.environ.get("ALIGN_REWARD_WORKERS", "2")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"ALIGN_REWARD_WORKERS={value!r} must be a whole number >= 1")
    return int(value)


def _get_pool() -> ProcessPool:
    global _pool
    with _lock:
        if _pool is None or not _pool.active:
            _pool = ProcessPool(max_workers=worker_count(), context=multiprocessing.get_context("spawn"))
        return _pool


def shutdown() -> None:
    """Stop the workers (also done at exit); the next `score_each` starts new ones."""
    global _pool
    with _lock:
        if _pool is not None:
            _pool.stop()
            _pool.join(timeout=10)
            _pool = None


atexit.register(shutdown)


def score_each(fn: Callable[..., Any], items: Sequence[tuple], timeout_s: float) -> list[Any | None]:
    """[fn(*item) for item in items], each in a worker process; None where an item timed out or its worker died.

    fn must be importable by name (a module-level function). An exception fn raises is re-raised here:
    that is a bug in the reward, not a property of the text.
    """
    if not timeout_s > 0:
        raise ValueError(f"score_each: timeout_s must be > 0, got {timeout_s}")
    if not items:
        return []
    pool = _get_pool()
    futures = [pool.schedule(fn, args=tuple(item), timeout=timeout_s) for item in items]
    results: list[Any | None] = []
    for future in futures:
        try:
            results.append(future.result())
        except concurrent.futures.TimeoutError:
            _counts["timeouts"] += 1
            results.append(None)
        except ProcessExpired:
            _counts["crashes"] += 1
            results.append(None)
    return results


def timeouts() -> int:
    """Items that ran past their limit since this process started."""
    return _counts["timeouts"]


def crashes() -> int:
    """Items whose worker died since this process started."""
    return _counts["crashes"]
