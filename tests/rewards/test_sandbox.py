"""The sandbox runs programs and tests with limits; code_passes_tests scores through it; missing isolation is refused.

Attacks on the sandbox are in test_sandbox_escapes.py.
"""

from __future__ import annotations

import subprocess
import time

import pytest

import rewards.sandbox as sandbox
from rewards.code import code_passes_tests, extract_python_code
from rewards.sandbox import SandboxUnavailable, bwrap_problem, run_python_sandboxed, run_tests_sandboxed

needs_bwrap = pytest.mark.skipif(bwrap_problem() is not None, reason=f"no bubblewrap sandbox here: {bwrap_problem()}")
MODES = [pytest.param("bwrap", marks=needs_bwrap), "weak"]


@pytest.mark.parametrize("isolation", MODES)
def test_runs_code_with_stdin_in_a_private_temporary_directory(isolation):
    code = "import os, sys\nprint(sys.stdin.read().upper())\nprint(os.getcwd())\nprint(sorted(os.environ))"
    result = run_python_sandboxed(code, stdin="hello", isolation=isolation)
    assert result.ok and result.returncode == 0 and not result.timed_out, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "HELLO"
    assert lines[1] == "/tmp" if isolation == "bwrap" else "align-sandbox-" in lines[1]
    assert "PYTHONPATH" not in lines[2] and "HF_HUB_OFFLINE" not in lines[2]
    assert result.isolation.startswith(isolation)


@pytest.mark.parametrize("isolation", MODES)
def test_failure_reports_exit_status_and_stderr(isolation):
    result = run_python_sandboxed("import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)", isolation=isolation)
    assert not result.ok and result.returncode == 3 and "bad" in result.stderr


@pytest.mark.parametrize("isolation", MODES)
def test_infinite_loop_is_stopped_near_the_timeout(isolation):
    start = time.monotonic()
    result = run_python_sandboxed("while True:\n    pass", timeout_s=1, isolation=isolation)
    assert result.timed_out and not result.ok
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("isolation", MODES)
@pytest.mark.parametrize("code", ["x = bytearray(2 * 1024**3)", "a = []\nwhile True:\n    a.append(' ' * 10**7)"])
def test_memory_bomb_is_stopped_by_the_address_space_limit(code, isolation):
    result = run_python_sandboxed(code, timeout_s=10, memory_mb=256, isolation=isolation)
    assert not result.ok and not result.timed_out
    assert "MemoryError" in result.stderr


@pytest.mark.parametrize("isolation", MODES)
def test_tests_pass_only_when_the_harness_prints_its_token(isolation):
    passing = run_tests_sandboxed("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n", isolation=isolation)
    failing = run_tests_sandboxed("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5\n", isolation=isolation)
    assert passing.ok and passing.tests_passed and passing.returncode == 0
    assert not failing.ok and failing.tests_passed is False and "AssertionError" in failing.stderr


def test_tests_see_the_solution_names_and_its_output():
    # Functions arrive as proxies, plain values by value, standard modules as the tests' own copy.
    solution = "import math as m\nSCALE = {'x': (1, 2.5)}\nprint('from solution')\ndef norm1(p):\n    return abs(p[0]) + abs(p[1])\n"
    tests = "assert norm1((-1, 2)) == 3\nassert SCALE == {'x': (1, 2.5)}\nassert m.sqrt(4) == 2\nprint('from tests')\n"
    result = run_tests_sandboxed(solution, tests, isolation="weak")
    assert result.tests_passed, result.stderr
    # The token line is the verdict, not part of the program's output.
    assert [line for line in result.stdout.splitlines() if line] == ["from solution", "from tests"]


def test_plain_data_round_trips_by_exact_type():
    values = "[None, True, 3, 2**100, -0.5, float('inf'), 1j, 'é', b'\\x00', [1], (1, (2,)), {1: 'a', (2, 3): [4]}, {5}, frozenset({6})]"
    solution = f"def values():\n    return {values}\ndef echo(*args, **kwargs):\n    return [args, kwargs]\n"
    tests = (
        f"expected = {values}\nassert values() == expected\n"
        "assert [type(v) for v in values()] == [type(v) for v in expected]\n"
        "assert echo(expected, key=(1,)) == [(expected,), {'key': (1,)}]\n"
    )
    assert run_tests_sandboxed(solution, tests, isolation="weak").tests_passed


def test_solution_exceptions_reach_the_tests_as_builtin_classes():
    solution = (
        "class BadInput(ValueError):\n    pass\ndef parse(s):\n    if not s.isdigit():\n        raise BadInput('not a number', s)\n"
        "    return int(s)\n"
    )
    tests = "try:\n    parse('x')\n    raise AssertionError('no error')\nexcept ValueError as e:\n    assert e.args == ('not a number', 'x')\nassert parse('7') == 7\n"
    assert run_tests_sandboxed(solution, tests, isolation="weak").tests_passed


@pytest.mark.parametrize(
    "returned, why",
    [
        ("collections.namedtuple('P', 'x y')(1, 2)", "a collections.P is not plain data"),
        ("(i for i in range(3))", "a builtins.generator is not plain data"),
        ("type('I', (int,), {})(3)", "a solution.I is not plain data"),
    ],
)
def test_a_return_value_that_is_not_plain_data_fails_in_one_line(returned, why):
    # Compared by the solution's own __eq__ otherwise; a catch-all in the tests cannot swallow the failure.
    solution = f"import collections\ndef f():\n    return {returned}\n"
    result = run_tests_sandboxed(solution, "try:\n    f()\nexcept Exception:\n    pass\n", isolation="weak")
    assert not result.tests_passed and result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == f"sandbox: f() returned something other than plain data: {why}"


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        run_python_sandboxed("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb=8 is too small"):
        run_python_sandboxed("pass", memory_mb=8)
    with pytest.raises(ValueError, match="ALIGN_SANDBOX"):
        run_python_sandboxed("pass", isolation="none")


def test_without_bubblewrap_code_rewards_refuse_with_the_fix(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.bwrap_problem.cache_clear()
    monkeypatch.delenv("ALIGN_SANDBOX", raising=False)
    try:
        with pytest.raises(SandboxUnavailable, match=r"bubblewrap \(bwrap\) is not installed; install bubblewrap .*ALIGN_SANDBOX=weak"):
            code_passes_tests(["p"], ["```python\nx = 1\n```"], tests=["assert x == 1"])
        # The documented opt-in runs the weaker mode instead.
        monkeypatch.setenv("ALIGN_SANDBOX", "weak")
        assert code_passes_tests(["p"], ["```python\nx = 1\n```"], tests=["assert x == 1"]) == [1.0]
    finally:
        sandbox.bwrap_problem.cache_clear()


def test_bwrap_that_cannot_make_namespaces_is_refused(monkeypatch):
    def broken(*args, **kwargs):
        return subprocess.Popen(["sh", "-c", "echo 'bwrap: No permissions to creating new namespace' >&2; exit 1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    monkeypatch.setattr(sandbox, "_start_bwrap", broken)
    sandbox.bwrap_problem.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="bwrap cannot create its namespaces here .*No permissions"):
            run_python_sandboxed("pass", isolation="bwrap")
    finally:
        sandbox.bwrap_problem.cache_clear()


def test_extract_python_code_takes_the_last_python_block():
    text = "first\n```python\nx = 1\n```\nthen\n```py\ndef f():\n    return 2\n```\n```text\nno\n```"
    assert extract_python_code(text) == "def f():\n    return 2\n"
    assert extract_python_code("no code") is None


@needs_bwrap
def test_code_passes_tests_scores_each_completion():
    good = "Here:\n```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    looping = "```python\ndef add(a, b):\n    while True:\n        pass\n```"
    no_code = "add is a + b"
    tests = "assert add(2, 3) == 5"
    completions = [good, wrong, looping, no_code, [{"role": "assistant", "content": good}], good]
    rewards = code_passes_tests(
        ["p"] * 6, completions, tests=[tests] * 5 + [None], timeout_s=1.0, completion_ids=[[1]] * 6, trainer_state=None
    )
    assert rewards == [1.0, 0.0, 0.0, 0.0, 1.0, None]


def test_code_passes_tests_needs_a_tests_column():
    with pytest.raises(ValueError, match="needs a 'tests' column; the batch has: answer"):
        code_passes_tests(["p"], ["c"], answer=["1"])
