"""Rollout sources: where a step's `GroupBatch` comes from. The loop talks to a `RolloutSource`
and never knows which one it is:

    collect(step, n_prompts, timers) -> Collected     this rank's share of the step's n_prompts groups
    state_dict() / load_state_dict(state)              the data position, saved in every checkpoint
    set_context(tokens)                                the engine's context length (sources that check prompts)
    wait_for_generation() -> timings                   before a weight sync: generation ahead has finished
    evaluate() -> metrics | None                       a held-out evaluation of the source's own, else the loop's
    uses_engine, unused_rows                           no engine / weight sync for training; rows never trained on

Three are built in (ROLLOUT_SOURCES in __init__.py): generate.py (single-turn sampling), offline.py
(fixed rows, docs/OFFLINE.md) and episodes.py (multi-turn agents: policy tokens in `completion_ids`
with `token_mask` = 1 on action tokens only and `step_ids` = the step of each token).
"""

from __future__ import annotations

from dataclasses import dataclass

from align.algos import GroupBatch
from align.rollout import Completion


@dataclass
class Collected:
    """What a source returns: the batch, this rank's rollout metrics, and for the sample log the
    dataset rows (P) and completions (P*G `Completion`s, group-major) the batch was built from."""

    batch: GroupBatch
    metrics: dict[str, float]
    rows: list[dict]
    completions: list[Completion]


class RolloutSource:
    """What the loop calls on a source; each source is built as Source(cfg, algorithm, engine,
    tokenizer, dataset, accelerator). The defaults are those of a source that needs none of it."""

    uses_engine: bool = True  # False: the loop builds no engine for training and never syncs weights
    unused_rows: int = 0  # dataset rows the source never trains on (the run's batch arithmetic says so)

    def collect(self, step: int, n_prompts: int, timers: dict[str, float]) -> Collected:
        raise NotImplementedError(f"{type(self).__name__}.collect")

    def state_dict(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__}.state_dict")

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__}.load_state_dict")

    def wait_for_generation(self) -> dict[str, float]:
        """Wait for generation still running for a later step (rollout.max_staleness >= 1); the loop
        calls it before the engine's weights change. Returns the step's overlap timings."""
        return {}

    def set_context(self, tokens: int | None) -> None:
        """The engine's context length in tokens (None: no engine); a source that encodes prompts checks them."""

    def evaluate(self) -> dict[str, float] | None:
        """Held-out metrics of the source's own (agents: success rate), or None: the loop evaluates accuracy."""
        return None


def gathered(world: int, values: list) -> list:
    """Every rank's `values`, concatenated in rank order (a collective when there are several ranks)."""
    if world == 1:
        return values
    from accelerate.utils import gather_object

    return gather_object(values)
