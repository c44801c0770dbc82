"""rewards.runner: loading specs, TRL's calling convention and nansum rule, one-line errors, timeouts, async."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import torch

from rewards.runner import RewardFunction, RewardFunctionError, compute_rewards, load_reward_functions, reward_metrics


def run(functions, completions, columns=None, prompts=None, ids=None, **kwargs):
    n = len(completions)
    return compute_rewards(
        functions,
        prompts if prompts is not None else ["p"] * n,
        completions,
        columns or {},
        ids if ids is not None else [[1, 2]] * n,
        **kwargs,
    )


def constant(values):
    def fn(prompts, completions, **kwargs):
        return list(values)

    return fn


def test_trl_style_function_with_conversational_completions_works_unchanged():
    # Written exactly as TRL's docs write reward functions: completions first, everything else in **kwargs.
    def reward_len(completions, **kwargs):
        return [-abs(20 - len(completion[0]["content"])) for completion in completions]

    seen = {}

    def reads_columns(prompts, completions, ground_truth, completion_ids, trainer_state, **kwargs):
        seen.update(prompts=prompts, ground_truth=ground_truth, ids=completion_ids, state=trainer_state, keys=set(kwargs))
        return [float(c[0]["content"] == g) for c, g in zip(completions, ground_truth)]

    prompts = [[{"role": "user", "content": "say 4"}]] * 2
    completions = [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "x" * 25}]]
    functions = [RewardFunction("reward_len", reward_len), RewardFunction("exact", reads_columns, weight=2.0)]
    result = compute_rewards(
        functions, prompts, completions, {"ground_truth": ["4", "4"], "prompt": prompts}, [[7], [8, 9]], trainer_state="S"
    )
    assert result.per_function == {"reward_len": [-19.0, -5.0], "exact": [1.0, 0.0]}
    assert result.total == [-19.0 + 2.0, -5.0]
    assert seen["prompts"] == prompts and seen["ground_truth"] == ["4", "4"] and seen["ids"] == [[7], [8, 9]]
    assert seen["state"] == "S" and {"log_extra", "log_metric"} <= seen["keys"] and "prompt" not in seen["keys"]


def test_weighted_nansum_with_none_matches_trl_rule():
    a = [1.0, None, 0.5, None]
    b = [None, 2.0, 1.0, None]
    c = [0.0, 1.0, None, None]
    weights = [1.0, 0.5, -2.0]
    functions = [RewardFunction(n, constant(v), w) for n, v, w in zip("abc", (a, b, c), weights)]
    result = run(functions, ["x"] * 4)
    # Hand computed: row0 = 1*1 + (-2)*0 = 1; row1 = 0.5*2 + (-2)*1 = -1; row2 = 1*0.5 + 0.5*1 = 1; row3 = nothing = 0.
    assert result.total == [1.0, -1.0, 1.0, 0.0]
    assert result.unscorable == [False, False, False, True]
    assert result.per_function["a"] == a
    # TRL 1.16: (rewards_per_func * weights).nansum(dim=1), None -> NaN.
    table = torch.tensor([[math.nan if v is None else v for v in col] for col in (a, b, c)]).T
    assert torch.allclose((table * torch.tensor(weights)).nansum(dim=1), torch.tensor(result.total))


def test_metrics_are_over_non_none_values():
    functions = [RewardFunction("a", constant([1.0, None, 3.0])), RewardFunction("b", constant([None, None, None]))]
    metrics = reward_metrics(run(functions, ["x"] * 3))
    assert metrics["reward/a/mean"] == 2.0 and metrics["reward/a/std"] == pytest.approx(math.sqrt(2.0))
    assert math.isnan(metrics["reward/b/mean"])
    assert metrics["reward/scorable_mean"] == 2.0 and metrics["reward/unscorable_frac"] == pytest.approx(1 / 3)


def test_log_extra_and_log_metric_hooks_are_collected():
    def logs(prompts, completions, log_extra, log_metric, **kwargs):
        log_extra("parsed", ["a", "b"])
        log_metric("hits", 3)
        return [0.0, 1.0]

    result = run([RewardFunction("logs", logs)], ["x", "y"])
    assert result.extra_columns == {"parsed": ["a", "b"]} and result.logged_metrics == {"hits": [3.0]}


@pytest.mark.parametrize(
    "returned, expected",
    [
        ([1.0], "returned 1 rewards for 2 completions"),
        ([1.0, "yes"], "returned str 'yes' at sample 1"),
        ([math.nan, 1.0], "returned nan at sample 0"),
        ([1.0, math.inf], "returned inf at sample 1"),
        (1.0, "returned a float; it must return a list"),
    ],
)
def test_bad_return_values_name_the_function_problem_and_sample(returned, expected):
    with pytest.raises(RewardFunctionError) as info:
        run([RewardFunction("my_reward", constant(returned) if isinstance(returned, list) else (lambda **k: returned))], ["x", "y"])
    assert "'my_reward'" in str(info.value) and expected in str(info.value) and "\n" not in str(info.value)


def test_exception_inside_a_function_becomes_one_line():
    def broken(prompts, completions, **kwargs):
        raise KeyError("missing\ncolumn")

    for timeout in (None, 5.0):
        with pytest.raises(RewardFunctionError) as info:
            run([RewardFunction("broken", broken)], ["x"], timeout_s=timeout)
        assert str(info.value).startswith("reward function 'broken' raised KeyError") and "\n" not in str(info.value)
        assert isinstance(info.value.__cause__, KeyError)


def test_slow_sync_function_times_out_with_its_name():
    def slow(prompts, completions, **kwargs):
        time.sleep(3)
        return [1.0]

    start = time.monotonic()
    with pytest.raises(RewardFunctionError, match=r"'slow' took longer than timeout_s=0.2s"):
        run([RewardFunction("slow", slow)], ["x"], timeout_s=0.2)
    assert time.monotonic() - start < 2


def test_async_functions_run_concurrently_and_time_out():
    async def judge_a(prompts, completions, **kwargs):
        await asyncio.sleep(0.3)
        return [1.0] * len(completions)

    async def judge_b(prompts, completions, **kwargs):
        await asyncio.sleep(0.3)
        return [None, 2.0]

    start = time.monotonic()
    result = run([RewardFunction("a", judge_a), RewardFunction("b", judge_b), RewardFunction("c", constant([1.0, 1.0]))], ["x", "y"])
    assert time.monotonic() - start < 0.55  # the two 0.3 s judges overlapped
    assert result.total == [2.0, 4.0]

    async def hangs(prompts, completions, **kwargs):
        await asyncio.sleep(10)

    with pytest.raises(RewardFunctionError, match=r"'hangs' took longer than timeout_s=0.2s"):
        run([RewardFunction("hangs", hangs)], ["x"], timeout_s=0.2)


def test_async_functions_work_when_the_caller_runs_an_event_loop():
    async def judge(prompts, completions, **kwargs):
        return [0.5] * len(completions)

    async def caller():
        return run([RewardFunction("judge", judge)], ["x"])

    assert asyncio.run(caller()).total == [0.5]


def test_misaligned_inputs_are_rejected():
    with pytest.raises(RewardFunctionError, match="column 'answer' has 1 values for 2 completions"):
        run([RewardFunction("a", constant([1.0, 1.0]))], ["x", "y"], columns={"answer": ["1"]})


def test_load_reward_functions_by_name_file_and_with_options(tmp_path):
    path = tmp_path / "user_rewards.py"
    path.write_text("def mine(prompts, completions, **kwargs):\n    return [0.25] * len(completions)\n")
    functions = load_reward_functions(
        ["math_accuracy", "length_reward", f"{path}:mine"], [1.0, 0.5, 2.0], options={"length_reward": {"l_max": 4}}
    )
    assert [f.name for f in functions] == ["math_accuracy", "length_reward", "mine"]
    assert [f.weight for f in functions] == [1.0, 0.5, 2.0]
    result = run(functions, ["<answer>3</answer>", "<answer>4</answer>"], columns={"answer": ["3", "5"]}, ids=[[1, 2], [1] * 9])
    assert result.per_function["length_reward"] == [0.5, 1.0]
    assert result.total == [1.0 + 0.25 + 0.5, 0.5 + 0.5]


@pytest.mark.parametrize(
    "specs, weights, options, expected",
    [
        (["math_accuracy"], [1.0, 2.0], None, "2 reward weights for 1 reward functions"),
        (["math_accuracy", "math_accuracy"], None, None, "listed twice"),
        ([], None, None, "no reward functions given"),
        ("math_accuracy", None, None, "wrap it in a list"),
        (["math_accuracy"], [math.nan], None, "must be a finite number"),
        (["math_accuracy"], None, {"length_reward": {"l_max": 3}}, "not among the reward functions"),
    ],
)
def test_load_reward_functions_errors(specs, weights, options, expected):
    with pytest.raises(RewardFunctionError, match=expected) as info:
        load_reward_functions(specs, weights, options)
    assert "\n" not in str(info.value)


def test_trl_builtin_reward_functions_run_unchanged():
    pytest.importorskip("trl.rewards")
    functions = load_reward_functions(
        ["trl.rewards:accuracy_reward", "trl.rewards:think_format_reward"], [1.0, 0.5]
    )
    assert [f.name for f in functions] == ["accuracy_reward", "think_format_reward"]
    completions = [
        [{"role": "assistant", "content": "<think>x</think>My answer is \\boxed{\\frac{1}{3}}"}],
        [{"role": "assistant", "content": "My answer is \\boxed{\\frac{1}{2}}"}],
    ]
    result = run(functions, completions, columns={"solution": ["\\frac{1}{3}", "\\frac{1}{3}"]})
    assert result.per_function == {"accuracy_reward": [1.0, 0.0], "think_format_reward": [1.0, 0.0]}
    assert result.total == [1.5, 0.0]
    assert result.extra_columns["solution"] == ["\\frac{1}{3}", "\\frac{1}{3}"]  # TRL's log_extra hook reached us


@pytest.mark.parametrize("timeout_s", [60.0, None])
def test_each_function_gets_its_own_copy_of_the_inputs(timeout_s):
    # A function that edits its inputs in place must not change what the next function (or the caller) sees.
    def vandal(prompts, completions, completion_ids, answer, **kw):
        completions[0] = "edited"
        completions.append("extra")
        prompts[0]["content"] = "edited"
        completion_ids[0].append(99)
        answer[0] = "edited"
        return [0.0] * 2

    seen = {}

    def witness(prompts, completions, completion_ids, answer, **kw):
        seen.update(prompts=prompts, completions=completions, completion_ids=completion_ids, answer=answer)
        return [0.0] * 2

    prompts = [{"role": "user", "content": "p0"}, {"role": "user", "content": "p1"}]
    completions, ids, columns = ["c0", "c1"], [[1], [2]], {"answer": ["a0", "a1"]}
    functions = [RewardFunction("vandal", vandal), RewardFunction("witness", witness)]
    compute_rewards(functions, prompts, completions, columns, ids, timeout_s=timeout_s)
    expected = dict(prompts=[{"role": "user", "content": "p0"}, {"role": "user", "content": "p1"}],
                    completions=["c0", "c1"], completion_ids=[[1], [2]], answer=["a0", "a1"])
    assert seen == expected
    assert (prompts, completions, ids, columns["answer"]) == tuple(expected[k] for k in ("prompts", "completions", "completion_ids", "answer"))


EXITING_REWARD = """
import os, sys
from align.errors import exit_on_user_error
from rewards.runner import RewardFunction, compute_rewards

def quitter(prompts, completions, **kwargs):
    os._exit(0)

async def async_quitter(prompts, completions, **kwargs):
    os._exit(0)

def posix_quitter(prompts, completions, **kwargs):
    import posix
    posix._exit(0)  # the function os._exit is, under its own module's name

def sys_quitter(prompts, completions, **kwargs):
    sys.exit(0)

chosen = {"sync": quitter, "async": async_quitter, "posix": posix_quitter, "sys": sys_quitter}[sys.argv[1]]
timeout_s = None if sys.argv[2] == "none" else 60.0
with exit_on_user_error():
    compute_rewards([RewardFunction(chosen.__name__, chosen)], ["p"], ["c"], {}, [[1]], timeout_s=timeout_s)
print("not reached")
"""


@pytest.mark.parametrize("kind, timeout", [("sync", "60"), ("sync", "none"), ("async", "60"), ("posix", "60"),
                                           ("posix", "none"), ("sys", "60"), ("sys", "none")])
def test_a_reward_that_calls_os_exit_fails_the_run_in_one_line(kind, timeout, tmp_path):
    # os._exit(0) skips every handler: left alone, the run would end with status 0, no message and no model.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "exiting_reward.py"
    script.write_text(EXITING_REWARD)
    proc = subprocess.run([sys.executable, str(script), kind, timeout], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    name = {"sync": "quitter"}.get(kind, f"{kind}_quitter")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    said = "raised SystemExit: 0" if kind == "sys" else "called os._exit(0)"
    assert len(lines) == 1 and lines[0].startswith(f"align: error: reward function {name!r} {said}"), proc.stderr


FORKING_REWARD = """
import multiprocessing, sys
from rewards.runner import RewardFunction, compute_rewards

def square(x, out):
    out.put(x * x)  # the child then ends through os._exit, as multiprocessing's fork children do

def forking(prompts, completions, **kwargs):
    out = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=square, args=(3, out))
    child.start()
    value = out.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0, child.exitcode
    return [float(value)]

print(compute_rewards([RewardFunction("forking", forking)], ["p"], ["c"], {}, [[1]], timeout_s=None).total)
"""


def test_a_child_forked_inside_a_reward_still_exits(tmp_path):
    # The child inherits the 'inside a reward call' mark; its os._exit must end it, not raise in it and
    # let a copy of the trainer run on (once printing the result twice, or hanging).
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "forking_reward.py"
    script.write_text(FORKING_REWARD)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["[9.0]"], proc.stdout
