"""Math answer accuracy with math-verify: 1.0 when the completion's final answer equals the gold answer.

Where the prediction comes from, in order: the content of the last <answer>...</answer> block; else the
whole completion, in which math-verify looks for \\boxed{...} first and then for the last expression.

Beyond math-verify's symbolic/numeric equality, two acceptance rules used by GeometryZero's reward code:

- option letters: when the gold is a letter ("B"), or the dataset has an `answer_letter` column
  (see align/data/geometry3k.py), an answer of "B", "(B)" or "B." counts as correct;
- relaxed numeric match (`relative_tolerance`, 0.02 in `math_accuracy_relaxed`): the prediction's value
  within 2% of the gold's value. Unlike GeometryZero, which accepts ANY number in the answer, we compare
  one value (the parsed answer, else its last number), so listing many numbers earns nothing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rewards.format import completion_text, extract_answer_tag
from rewards.registry import register
from rewards.workers import score_each

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_LETTER = re.compile(r"\(?\s*([A-Za-z])\s*\)?\.?")
_WHOLE_TEXT_CONFIG = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
_TAG_LATEX_CONFIG = [LatexExtractionConfig()]
# Plain-text "pi" (as in "2*pi", "4pi") would otherwise be read as the product p*i in LaTeX mode.
_PLAIN_PI = re.compile(r"(?<![A-Za-z\\])pi(?![A-Za-z])")


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once when its timeout is off; off the main thread we turn it off on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def _math_verify_timeout() -> int | None:
    # math-verify's timeout uses SIGALRM, which only the main thread may set; elsewhere it would raise and
    # math-verify would quietly score the answer 0. Off the main thread the caller's timeout applies instead.
    return 5 if threading.current_thread() is threading.main_thread() else None


def parse_gold(gold: str) -> list:
    """math-verify parse of a gold answer written as bare LaTeX or plain text ("2\\sqrt{3}", "0.5", "x=3")."""
    timeout = _math_verify_timeout()
    gold = gold.strip()
    # Bare LaTeX needs math delimiters, or math-verify reads "2\\sqrt{3}" as just "2".
    wrapped = gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"
    parsed = parse(wrapped, parsing_timeout=timeout)
    return parsed or parse(gold, parsing_timeout=timeout)


def parse_prediction(text: str) -> tuple[list, str]:
    """(math-verify parse, the text it came from) for a completion's final answer (see module docstring)."""
    timeout = _math_verify_timeout()
    tagged = extract_answer_tag(text)
    if tagged is None:
        return parse(text, extraction_config=_WHOLE_TEXT_CONFIG, parsing_timeout=timeout), text
    if not tagged:
        return [], tagged
    # The tag holds one bare answer: read it as LaTeX first so "2\\sqrt{3}" is not cut to "2".
    latex = _PLAIN_PI.sub(r"\\pi ", tagged)
    parsed = parse(f"${latex}$", extraction_config=_TAG_LATEX_CONFIG, parsing_timeout=timeout)
    return parsed or parse(tagged, extraction_config=_WHOLE_TEXT_CONFIG, parsing_timeout=timeout), tagged


def _as_float(parsed: list, fallback_text: str | None) -> float | None:
    """Numeric value of the first parsed expression, else of the last number in fallback_text."""
    if parsed:
        try:
            return float(parsed[0])
        except (TypeError, ValueError):
            pass
    if fallback_text:
        numbers = _NUMBER.findall(fallback_text)
        if numbers:
            return float(numbers[-1])
    return None


def _letter(text: str) -> str | None:
    match = _LETTER.fullmatch(text.strip())
    return match.group(1).upper() if match else None


def score_answer(text: str, gold: str, gold_letter: str | None = None, relative_tolerance: float | None = None) -> float:
    """1.0 if the completion text answers `gold` (or the option `gold_letter`), else 0.0."""
    predicted, answer_text = parse_prediction(text)
    gold_parsed = parse_gold(gold)
    if predicted and gold_parsed and verify(gold_parsed, predicted, timeout_seconds=_math_verify_timeout()):
        return 1.0

    letter = gold_letter.strip().upper() if gold_letter else _letter(gold)
    if letter is not None and _letter(answer_text) == letter:
        return 1.0

    if relative_tolerance is not None:
        gold_value = _as_float(gold_parsed, gold)
        predicted_value = _as_float(predicted, answer_text)
        if gold_value is not None and predicted_value is not None:
            if abs(predicted_value - gold_value) <= relative_tolerance * abs(gold_value):
                return 1.0
    return 0.0


@register("math_accuracy")
def math_accuracy(
    prompts: list,
    completions: list,
    answer: Sequence[Any] | None = None,
    answer_letter: Sequence[Any] | None = None,
    relative_tolerance: float | None = None,
    timeout_s: float = 10.0,
    **kwargs,
) -> list[float | None]:
    """1.0/0.0 per completion against the `answer` column; None where the gold answer is missing or empty.

    `answer_letter` (optional column): the correct option letter, accepted as an alternative answer.
    `relative_tolerance`: also accept a value within this relative distance of the gold (e.g. 0.02).
    `timeout_s`: limit per completion; each is scored in a worker process (rewards/workers.py) that is
    killed past it, and the completion then scores None (counted in `reward/timeouts`).
    """
    if answer is None:
        columns = ", ".join(sorted(k for k in kwargs if k not in ("completion_ids", "trainer_state"))) or "(none)"
        raise ValueError(
            f"math_accuracy needs an 'answer' column; the batch has: {columns}; set data.answer_column=<your column>"
        )
    letters = answer_letter if answer_letter is not None else [None] * len(completions)
    rewards: list[float | None] = [None] * len(completions)
    jobs: list[tuple[int, tuple]] = []
    for index, (completion, gold, gold_letter) in enumerate(zip(completions, answer, letters, strict=True)):
        if gold is not None and str(gold).strip():
            jobs.append((index, (completion_text(completion), str(gold), gold_letter or None, relative_tolerance)))
    scores = score_each(score_answer, [args for _, args in jobs], timeout_s)
    for (index, _), score in zip(jobs, scores):
        rewards[index] = score
    return rewards


@register("math_accuracy_relaxed")
def math_accuracy_relaxed(prompts: list, completions: list, **kwargs) -> list[float | None]:
    """`math_accuracy` that also accepts a value within 2% of the gold (GeometryZero's relaxed match)."""
    kwargs.setdefault("relative_tolerance", 0.02)
    return math_accuracy(prompts, completions, **kwargs)
