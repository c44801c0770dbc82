"""ServerPool: one training process sampling from several vLLM servers (data-parallel rollouts).

With more servers than training processes, rank r owns servers r, r + W, r + 2W, ... (W processes;
see `servers_of_rank`). Each call's prompts are dealt over the rank's servers in contiguous slices,
sent at once, and put back in order; after every optimizer step each server is loaded and verified
as a lone `ServerEngine` would be. A seeded call gives every prompt the seed of its place in the
whole call, so the samples are the same whichever server a prompt lands on, and the same as from
one server (`tests/rollout/test_server_pool.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from align.rollout.base import Completion, SamplingSettings, SyncReport, check_prompts


def servers_of_rank(servers: Sequence[str], rank: int, world: int) -> list[str]:
    """The servers rank `rank` of `world` samples from: server j belongs to rank j mod W, and with fewer
    servers than ranks rank r shares server r mod N (the config check makes N a multiple of W when N > W)."""
    if len(servers) <= world:
        return [servers[rank % len(servers)]]
    return list(servers[rank::world])


def deal(count: int, parts: int) -> list[range]:
    """`count` items in `parts` contiguous slices, sizes differing by at most one (the first ones larger)."""
    size, extra = divmod(count, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]


class ServerPool:
    """The rollout-engine interface the loop calls, over several ServerEngines (same weights, same version)."""

    def __init__(self, engines: Sequence) -> None:
        if len(engines) < 2:
            raise ValueError("a ServerPool needs at least two servers; use the ServerEngine itself for one")
        self.engines = list(engines)
        self.max_model_len = min(e.max_model_len for e in self.engines)  # a prompt may land on any of them
        self.url = ", ".join(e.url for e in self.engines)

    # ---- generation ------------------------------------------------------------------------
    def _dealt(self, items: list, call) -> list:
        """`call(engine, its contiguous slice of items, the slice's start)` on each server at once, results in order."""
        slices = [s for s in deal(len(items), len(self.engines)) if len(s)]
        if not slices:
            return []
        with ThreadPoolExecutor(max_workers=len(slices)) as pool:
            parts = pool.map(lambda pair: call(pair[0], items[pair[1].start:pair[1].stop], pair[1].start),
                             zip(self.engines, slices))
            return [result for part in parts for result in part]

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Completion]]:
        check_prompts(prompts, n)
        return self._dealt(prompts, lambda engine, part, first: engine.generate_slice(part, n, sampling, first=first))

    def score(self, sequences: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        return self._dealt(sequences, lambda engine, part, _: engine.score(part))

    # ---- weights: every server in turn, each verified on its own ----------------------------
    @staticmethod
    def _tensors(named_tensors: Iterable[tuple[str, torch.Tensor]] | None) -> list | None:
        # A ZeRO-3 gather is an iterator that can be walked once: kept whole (one full copy of the
        # weights on this rank) so that each server gets it. Without ZeRO-3 (None) each server reads the model.
        return None if named_tensors is None else list(named_tensors)

    def attach(self, model, named_tensors: Iterable[tuple[str, torch.Tensor]] | None = None) -> None:
        tensors = self._tensors(named_tensors)
        for engine in self.engines:
            engine.attach(model, named_tensors=tensors)

    def calibrate(self, model) -> float:
        return max(engine.calibrate(model) for engine in self.engines)

    def sync_from(self, model, *, verify: bool = True, version: int | None = None,
                  named_tensors: Iterable[tuple[str, torch.Tensor]] | None = None) -> SyncReport:
        tensors = self._tensors(named_tensors)
        reports = [engine.sync_from(model, verify=verify, version=version, named_tensors=tensors)
                   for engine in self.engines]
        versions = {r.weight_version for r in reports}
        if len(versions) != 1:  # each counts its own loads: they can only differ through a bug here
            raise RuntimeError(f"rollout servers {self.url} hold weight versions {sorted(versions)} after one sync")
        return SyncReport(reports[0].weight_version, max(r.probe_diff for r in reports), sum(r.seconds for r in reports))

    @property
    def weight_version(self) -> int:
        return self.engines[0].weight_version

    def sleep(self) -> None:
        for engine in self.engines:
            engine.sleep()

    def wake(self) -> None:
        for engine in self.engines:
            engine.wake()

    def close(self) -> None:
        failure = None
        for engine in self.engines:  # each one, even after another failed: a server keeps an unclosed transport
            try:
                engine.close()
            except Exception as error:  # noqa: BLE001 - the others still need closing; the first failure is raised below
                failure = failure or error
        if failure is not None:
            raise failure
