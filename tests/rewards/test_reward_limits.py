"""Rewards cannot hang or crash the run on hostile text: scoring runs in killable worker processes, and the
geometry parser bounds what it parses."""

from __future__ import annotations

import os
import time

import pytest

from rewards.runner import compute_rewards, load_reward_functions, reward_metrics
from rewards import workers
from rewards.geometry import aux_construction, check_aux_statements, evaluate_expression
from rewards.math import math_accuracy

POWER_TOWER = "<answer>9^{9^{9^{9}}}</answer>"


def test_power_tower_scores_none_and_is_counted_while_the_others_score():
    functions = load_reward_functions(["math_accuracy"], options={"math_accuracy": {"timeout_s": 2.0}})
    before = workers.timeouts()
    start = time.monotonic()
    result = compute_rewards(
        functions, ["p"] * 3, [POWER_TOWER, "<answer>4</answer>", "<answer>5</answer>"], {"answer": ["1", "4", "4"]}, [[1]] * 3
    )
    elapsed = time.monotonic() - start
    assert result.per_function["math_accuracy"] == [None, 1.0, 0.0]
    assert result.unscorable == [True, False, False]
    assert result.timeouts == 1 and workers.timeouts() == before + 1
    assert reward_metrics(result)["reward/timeouts"] == 1.0
    assert elapsed < 30  # 2 s limit + starting the workers; without the kill it does not return at all
    # The killed worker is replaced: the next call scores normally.
    again = math_accuracy(["p"], ["<answer>\\frac{1}{2}</answer>"], answer=["0.5"], timeout_s=5.0)
    assert again == [1.0], (workers.timeouts(), workers.crashes())


def test_workers_are_reused_across_calls():
    first = set(workers.score_each(os.getpid, [()] * 8, timeout_s=10))
    second = set(workers.score_each(os.getpid, [()] * 8, timeout_s=10))
    assert os.getpid() not in first
    assert len(first | second) <= workers.worker_count()  # the same processes, not one per item


def test_a_bug_in_the_scorer_is_raised_not_hidden():
    with pytest.raises(ValueError, match="invalid literal"):
        workers.score_each(int, [("x",)], timeout_s=10)


def test_bad_worker_count_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("ALIGN_REWARD_WORKERS", "0")
    with pytest.raises(ValueError, match="ALIGN_REWARD_WORKERS='0' must be a whole number >= 1"):
        workers.worker_count()


@pytest.mark.parametrize(
    "block",
    [
        "S=" + "9" * 320 + "+1",  # OverflowError in float() before the bound
        "S=" + "+".join(["1"] * 1200),  # RecursionError in the parser / evaluator before the bound
        "S=" + "(" * 500 + "1" + ")" * 500,
        "S=1+1=" + "1" * 400,
    ],
)
def test_aux_parser_rejects_huge_input_without_raising(block):
    assert check_aux_statements(block, {}) is False
    completion = f"<think>so <aux>{block}</aux></think><answer>1</answer>"
    assert aux_construction(["A=30"], [completion]) == [0.0]


def test_aux_parser_still_accepts_ordinary_constructions():
    assert evaluate_expression("30+130", {}) == 160.0
    assert check_aux_statements("S=A+130=160", {"A": 30.0})


def test_trainer_metrics_report_the_timeouts_of_the_step_once():
    from align.algorithms import load_config
    from align.algorithms.grpo import GRPO

    cfg = load_config(["recipe=grpo_math", "reward.functions=[math_accuracy]", "reward.weights=null",
                       "reward.options.math_accuracy.timeout_s=1.0"])  # fmt: skip
    algo = GRPO(cfg)
    completions = [POWER_TOWER, "<answer>4</answer>"]
    scores = algo.score(["p", "p"], completions, {"answer": ["4", "4"]}, [[1], [1]], group_size=2)
    assert algo.batch_metrics(scores)["reward/timeouts"] == 1.0
    scores = algo.score(["p", "p"], ["<answer>4</answer>"] * 2, {"answer": ["4", "4"]}, [[1], [1]], group_size=2)
    assert algo.batch_metrics(scores)["reward/timeouts"] == 0.0  # counted for its own step only


def test_a_script_without_main_guard_works_and_a_stuck_worker_dies_with_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "score.py"
    script.write_text(
        "import os, threading, time\n"
        "from rewards import workers\nfrom rewards.math import math_accuracy\n"
        "print(math_accuracy(['p'], ['<answer>4</answer>'], answer=['4']), workers._idle[0].process.pid, flush=True)\n"
        f"threading.Thread(target=math_accuracy, args=(['p'], [{POWER_TOWER!r}]), kwargs={{'answer': ['1'], 'timeout_s': 600}}, daemon=True).start()\n"
        "time.sleep(3)\nos._exit(0)\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True, timeout=120)
    scores, pid = proc.stdout.split("]")[0] + "]", int(proc.stdout.split()[-1])
    assert scores == "[1.0]", proc.stderr[-2000:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # PR_SET_PDEATHSIG kills the worker stuck on the power tower
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"reward worker {pid} outlived its trainer")



def test_workers_outlive_the_ctrl_c_and_sigterm_sent_to_the_whole_process_group():
    # The trainer saves and stops after its step on either signal; its workers must still score until then.
    import signal

    pids = set(workers.score_each(os.getpid, [()] * 2, timeout_s=10))
    for pid in pids:
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    alive = {w.process.pid for w in workers._idle if w.process.poll() is None}
    assert pids <= alive
    assert set(workers.score_each(os.getpid, [()] * 2, timeout_s=10)) <= alive  # the same workers, none replaced
