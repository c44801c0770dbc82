"""Asynchronous rollouts (rollout.max_staleness = k >= 1): the first generation round of step t+k
runs in a background thread while step t trains, from the weights the engine holds then (those
after step t-1). The schedule is fixed, so a seeded run is reproducible step for step
(docs/ALGORITHMS.md section 9):

    before step s0 (the first, or the resumed one): the batches of steps s0 .. s0+k-1 are ready
        (generated now, or read back from the checkpoint)
    step t:  take batch t; draw the prompts of step t+k and start generating them;
             train on batch t; wait for the generation; the engine syncs to version t+1

(`take(t)`, then `start(t)`, then `wait()`.)

Batch t was therefore generated from version max(0, t-k): its staleness is at most k. Only the
engine's work runs in the thread (single-turn sampling, or whole agent episodes with their
environment calls): prompts are drawn in step order on the main thread, and scoring, refill rounds
and every collective stay there too.

What the thread makes is the source's own (`Ahead`): generate.py keeps completion groups,
episodes.py played episodes. It only has to say how it is written to and read from a checkpoint.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Protocol, TypeVar

from align.config import ConfigError
from align.sources.base import gathered


def staleness_metrics(now: int, versions: list[int], dropped: int) -> dict[str, float]:
    """How many weight versions behind `now` the trained samples were (`versions`: one per sample or
    action), and how many groups were dropped as too stale and made again."""
    behind = [now - v for v in versions]
    return {"rollout/staleness_mean": sum(behind) / len(behind), "rollout/staleness_max": float(max(behind)),
            "rollout/dropped_stale": float(dropped)}


class Ahead(Protocol):
    """One step's round 0 as a source makes it in the thread, JSON-able for the checkpoint."""

    def to_json(self) -> dict: ...


T = TypeVar("T", bound=Ahead)
Draw = Callable[[], tuple[list, list[int]]]  # this rank's rows of the next round-0 draw, with positions
Generate = Callable[[int, list, list[int]], T]  # (step, rows, positions) -> that step's round 0


class GenerateAhead(Generic[T]):
    """Keeps the round-0 batches of the next k steps; `take(t)` hands out step t's, `start(t)` starts step t+k's."""

    def __init__(self, k: int, draw: Draw, generate: Generate, load: Callable[[dict], T], rank: int = 0, world: int = 1):
        self.k, self._draw, self._generate, self._load = k, draw, generate, load
        self.rank, self.world = rank, world
        self.ready: dict[int, T] = {}
        self._pending: tuple[int, Future] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate-ahead")
        self._done_at = 0.0  # when the background generation returned (time.perf_counter)

    def take(self, step: int) -> T:
        """Step `step`'s batch; first fills the steps up to step+k-1 that are missing (at the start).
        Call `start(step)` after it."""
        if self._pending is not None:
            raise RuntimeError("GenerateAhead.take: the previous step's generation was not waited for (call wait())")
        for s in range(step, step + self.k):
            if s not in self.ready:
                self.ready[s] = self._generate(s, *self._draw())
        return self.ready.pop(step)

    def start(self, step: int) -> None:
        """Start generating step `step`+k's batch in the thread. The source calls it after `take(step)`
        and after what it does with the engine on the main thread (playing a stale group again), so
        that the two never share the engine and the tokenizer."""
        if self._pending is not None:
            raise RuntimeError("GenerateAhead.start: a generation is already in flight (call wait())")
        if step + self.k in self.ready:  # queued by a checkpoint of a run with a larger k: drawn already
            return
        # Also past train.steps: the last checkpoint then holds the next k batches, and a run resumed
        # with more steps trains exactly what one longer run would have (at the cost of k batches).
        rows, positions = self._draw()
        self._pending = (step + self.k, self._pool.submit(self._in_thread, step + self.k, rows, positions))

    def _in_thread(self, step: int, rows: list, positions: list[int]) -> T:
        try:
            return self._generate(step, rows, positions)
        finally:
            self._done_at = time.perf_counter()

    def wait(self) -> dict[str, float]:
        """Block until the generation started by `take` is done (before the engine's weights change).

        Returns the step's overlap: how long the trainer waited for the engine, and how long the
        engine had nothing to do before the trainer came to wait (both in seconds)."""
        if self._pending is None:
            return {}
        step, future = self._pending
        self._pending = None
        started = time.perf_counter()
        self.ready[step] = future.result()  # an engine error is raised here, on the main thread
        waited = time.perf_counter() - started
        return {"trainer_wait": waited, "engine_idle": max(0.0, started - self._done_at)}

    def state_dict(self) -> list[dict]:
        """Every rank's queue, in rank order (a collective when there are several processes)."""
        if self._pending is not None:
            raise RuntimeError("GenerateAhead.state_dict: a generation is in flight (call wait() first)")
        return gathered(self.world, [{str(s): batch.to_json() for s, batch in sorted(self.ready.items())}])

    def load_state_dict(self, per_rank: list[dict]) -> None:
        if len(per_rank) != self.world:
            raise ConfigError(f"this checkpoint holds generated-ahead batches of {len(per_rank)} process(es); "
                              f"resume rollout.max_staleness={self.k} on exactly that many")
        self.ready = {int(s): self._load(batch) for s, batch in per_rank[self.rank].items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
