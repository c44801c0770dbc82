"""Code-execution reward: run the completion's Python with the dataset's tests, in a sandboxed subprocess.

The program that runs is the completion's last ```python block, a blank line, then the sample's `tests`
column (typically asserts). Exit status 0 within the limits -> 1.0, anything else -> 0.0. Samples whose
`tests` entry is None or blank get None (not applicable). Nothing from the completion ever runs in the
training process: see rewards/sandbox.py for the limits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewards.format import completion_text
from rewards.registry import register
from rewards.sandbox import SandboxResult, namespace_prefix, run_python_sandboxed

__all__ = ["SandboxResult", "code_passes_tests", "extract_python_code", "namespace_prefix", "run_python_sandboxed"]

_PYTHON_BLOCK = re.compile(r"```(?:python|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_python_code(text: str) -> str | None:
    """The last ```python fenced block of `text` (without the fences), or None when there is none."""
    blocks = _PYTHON_BLOCK.findall(text)
    return blocks[-1] if blocks else None


def _passes(code: str | None, tests: str, timeout_s: float, memory_mb: int) -> float:
    if code is None:
        return 0.0
    result = run_python_sandboxed(f"{code}\n\n{tests}\n", timeout_s=timeout_s, memory_mb=memory_mb)
    return 1.0 if result.ok else 0.0


@register("code_passes_tests")
def code_passes_tests(
    prompts: list,
    completions: list,
    tests: Sequence[Any] | None = None,
    timeout_s: float = 5.0,
    memory_mb: int = 256,
    max_parallel: int = 2,
    **kwargs,
) -> list[float | None]:
    """1.0 when the completion's ```python block plus the sample's `tests` exits 0 in the sandbox, else 0.0.

    max_parallel: sandboxed programs run at once (each is its own process, so threads suffice here).
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
        scores = pool.map(lambda job: _passes(job[1], job[2], timeout_s, memory_mb), jobs)
        for (index, _, _), score in zip(jobs, scores):
            rewards[index] = score
    return rewards
