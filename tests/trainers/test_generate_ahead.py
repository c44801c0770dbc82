"""The asynchronous schedule (align/sources/ahead.py) with a fake engine whose weight version the
test moves as the loop's sync would: which weights each step's batch comes from, in which order
prompts are drawn, what a checkpoint carries, and what a misuse says."""

import json
import threading

import pytest

from align.rollout import Completion
from align.sources.ahead import GenerateAhead
from align.sources.generate import Generated


class FakeEngine:
    """Generation that records the version it sampled from; the test bumps `version` per step."""

    def __init__(self):
        self.version, self.calls, self.threads = 0, [], set()

    def generate(self, step, rows, positions):
        self.calls.append(step)
        self.threads.add(threading.current_thread().name)
        return [[Completion([1], [row["id"], step], [-0.5, -0.5], "", "stop", self.version)] for row in rows]


def ahead_of(k, draw, generate):
    """A GenerateAhead over the generation source's round-0 batch, as that source builds it."""
    return GenerateAhead(k, draw, lambda step, rows, positions: Generated(rows, positions, generate(step, rows, positions)),
                         Generated.from_json)


def _run(k, steps, start=0, state=None, engine=None, draws=None):
    engine = engine or FakeEngine()
    draws = draws if draws is not None else iter(range(10_000))
    ahead = ahead_of(k, lambda: ([{"id": next(draws)}], [0]), engine.generate)
    if state is not None:
        ahead.load_state_dict(json.loads(json.dumps(state)))  # as a checkpoint stores it
    trained, saved = [], None
    for step in range(start, steps):
        batch = ahead.take(step)
        ahead.start(step)
        trained.append((step, batch.rows[0]["id"], batch.groups[0][0].weight_version))
        ahead.wait()
        engine.version += 1  # the loop's sync after step `step`
        if step == 2:
            saved = ahead.state_dict()
    ahead.close()
    return trained, saved, engine


@pytest.mark.parametrize("k", [1, 2, 3])
def test_step_t_trains_on_a_batch_from_version_max_0_t_minus_k(k):
    trained, _, engine = _run(k, steps=8)
    assert [v for _, _, v in trained] == [max(0, t - k) for t in range(8)]
    assert [i for _, i, _ in trained] == list(range(8))  # prompts drawn in step order, none skipped
    # Also the k steps after the last: the final checkpoint holds them for a resume with more steps.
    assert sorted(engine.calls) == list(range(8 + k))
    assert any(name.startswith("generate-ahead") for name in engine.threads)


def test_a_resumed_run_trains_the_same_batches_from_the_same_versions():
    whole, saved, _ = _run(2, steps=8)
    # Resume after step 2 (the checkpoint's queue holds steps 3 and 4); the prompt stream goes on
    # after the five draws made by then (steps 0..4), as PromptStream's own state would.
    engine = FakeEngine()
    engine.version = 3
    resumed, _, _ = _run(2, steps=8, start=3, state=saved, engine=engine, draws=iter(range(5, 10_000)))
    assert resumed == whole[3:]
    assert sorted(engine.calls) == [5, 6, 7, 8, 9]  # the checkpointed batches are not generated again


def test_a_queue_resumed_under_a_smaller_k_is_trained_in_order_with_no_prompt_skipped():
    """A k=2 checkpoint after step 2 holds steps 3 and 4; resumed at k=1 (resume_force), step 3's
    batch is already queued: none is drawn for it, so the prompt stream goes on at step 5's."""
    whole, saved, _ = _run(2, steps=8)
    engine = FakeEngine()
    engine.version = 3
    resumed, _, _ = _run(1, steps=8, start=3, state=saved, engine=engine, draws=iter(range(5, 10_000)))
    assert [i for _, i, _ in resumed] == list(range(3, 8))
    assert [v for _, _, v in resumed] == [v for _, _, v in whole[3:5]] + [4, 5, 6]


def test_taking_a_step_before_waiting_for_the_last_is_an_error():
    engine = FakeEngine()
    ahead = ahead_of(1, lambda: ([{"id": 0}], [0]), engine.generate)
    ahead.take(0)
    ahead.start(0)
    with pytest.raises(RuntimeError, match="wait"):
        ahead.take(1)
    with pytest.raises(RuntimeError, match="in flight"):
        ahead.start(1)
    with pytest.raises(RuntimeError, match="in flight"):
        ahead.state_dict()
    ahead.wait()
    ahead.close()


def test_an_engine_error_in_the_thread_is_raised_on_the_main_thread():
    def broken(step, rows, positions):
        if step > 0:
            raise ConnectionError("server gone")
        return [[Completion([1], [2], [-1.0], "", "stop", 0)]]

    ahead = ahead_of(1, lambda: ([{"id": 0}], [0]), broken)
    ahead.take(0)
    ahead.start(0)
    with pytest.raises(ConnectionError, match="server gone"):
        ahead.wait()
    ahead.close()
