"""Code-execution reward: run the dataset's tests against the completion's Python, in the sandbox.

The completion's last ```python block is imported as the module `solution` in one sandbox; the sample's
`tests` column (asserts over the solution's names, or HumanEval's `check(candidate)` + `check(f)`) runs in
another, a fresh interpreter whose calls to the solution's functions go through proxies that carry plain
data only (rewards/sandbox.py, run_tests_sandboxed). 1.0 when every test ran and passed (the tests'
harness printed this run's random token after the last one), else 0.0: an object that equals anything,
reading the tests, patching the standard library or builtins, shadowing `sorted`, exiting early
(`os._exit(0)`, `SystemExit`) earn nothing. Samples whose `tests` entry is None or blank get None (not
applicable). Nothing from the completion ever runs in
the training process: see rewards/sandbox.py for the isolation and the limits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewards.format import completion_text
from rewards.registry import register
from rewards.sandbox import SandboxResult, SandboxUnavailable, run_python_sandboxed, run_tests_sandboxed

__all__ = [
    "SandboxResult",
    "SandboxUnavailable",
    "code_passes_tests",
    "extract_python_code",
    "run_python_sandboxed",
    "run_tests_sandboxed",
]

_PYTHON_BLOCK = re.compile(r"```(?:python|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_python_code(text: str) -> str | None:
    """The last ```python fenced block of `text` (without the fences), or None when there is none."""
    blocks = _PYTHON_BLOCK.findall(text)
    return blocks[-1] if blocks else None


def _passes(code: str | None, tests: str, timeout_s: float, memory_mb: int, isolation: str | None) -> float:
    if code is None:
        return 0.0
    result = run_tests_sandboxed(code, tests, timeout_s=timeout_s, memory_mb=memory_mb, isolation=isolation)
    return 1.0 if result.tests_passed else 0.0


@register("code_passes_tests")
def code_passes_tests(
    prompts: list,
    completions: list,
    tests: Sequence[Any] | None = None,
    timeout_s: float = 5.0,
    memory_mb: int = 256,
    max_parallel: int = 2,
    isolation: str | None = None,
    **kwargs,
) -> list[float | None]:
    """1.0 when the sample's `tests` pass against the completion's ```python block in the sandbox, else 0.0.

    max_parallel: sandboxed programs run at once (each is its own process, so threads suffice here).
    isolation: None ($ALIGN_SANDBOX, default "bwrap"), or "weak" to opt into the weaker sandbox where
    bubblewrap cannot run (reward.options.code_passes_tests.isolation=weak); see rewards/sandbox.py.
    """
    if tests is None:
        columns = ", ".join(sorted(k for k in kwargs if k not in ("completion_ids", "trainer_state"))) or "(none)"
        raise ValueError(f"code_passes_tests needs a 'tests' column; the batch has: {columns}")
    jobs: list[tuple[int, str | None, str]] = []
    rewards: list[float | None] = [None] * len(completions)
    for index, (completion, sample_tests) in enumerate(zip(completions, tests, strict=True)):
        if sample_tests is None or not str(sample_tests).strip():
            continue
        jobs.append((index, extract_python_code(completion_text(completion)), str(sample_tests)))
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        scores = pool.map(lambda job: _passes(job[1], job[2], timeout_s, memory_mb, isolation), jobs)
        for (index, _, _), score in zip(jobs, scores):
            rewards[index] = score
    return rewards

