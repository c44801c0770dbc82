"""Rewards for the built-in geometry task (align/data/geometry.py) and GCPO's auxiliary constructions.

`geometry_accuracy`: 1.0 when the last <answer>...</answer> block holds the gold answer, else 0.0.
    A plain number (optionally `x=`-prefixed or followed by a degree unit) matches when it lies
    within 2% of the gold value, relative (GeometryZero's relaxed numeric match); anything else
    is compared with math-verify.

`geometry_judge`: GRAO's judge, +1 / 0 / -1 for a completion against its reference answer:
    correct beats wrong, then the shorter of two correct ones wins.

`aux_construction`: 1.0 when the completion contains a VALID auxiliary construction, else 0.0.
    Valid means all of:
    - there is at least one <aux>...</aux> block, and every one lies inside the <think> block
      (before </think>); an <aux> left unclosed there makes the completion invalid;
    - each block holds one or more statements separated by ';' or newlines, each of the form
      `name=expression` or `name=expression=value`, where name is an identifier and the
      expression uses numbers, + - * /, parentheses, and names already known: those the prompt
      binds as `X=number` (e.g. "A=30") and those defined by earlier statements;
    - the arithmetic is consistent: when a value is written it equals the expression rounded to
      the precision written (|value - exact| <= half a unit of its last written digit), and no
      expression divides by zero.
    A statement that defines a name without a value takes the exact value of its expression.
"""

from __future__ import annotations

import ast
import operator
import re
import threading
from typing import Any

from rewards.format import completion_text, extract_answer_tag
from rewards.registry import register

RELATIVE_TOLERANCE = 0.02

_NUMBER = r"-?\d+(?:\.\d+)?"
_PLAIN_ANSWER = re.compile(rf"(?:[A-Za-z_]\w*\s*=\s*)?({_NUMBER})\s*(?:°|\^\s*\\circ|degrees?|deg)?\.?")
_PROMPT_BINDING = re.compile(rf"\b([A-Za-z_]\w*)\s*=\s*({_NUMBER})(?!\w|\.\d)")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_AUX_BLOCK = re.compile(r"<aux>(.*?)</aux>", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_]\w*")
_BINARY_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


# ---- answers ----


def parse_plain_number(text: str) -> float | None:
    """The number in an answer like "80", "x=80", "80°" or "80 degrees"; None for anything else."""
    match = _PLAIN_ANSWER.fullmatch(text.strip())
    return float(match.group(1)) if match else None


def answers_match(predicted: str, gold: str, relative_tolerance: float = RELATIVE_TOLERANCE) -> bool:
    """Relaxed numeric match when both sides are plain numbers, math-verify equality otherwise."""
    pred_value, gold_value = parse_plain_number(predicted), parse_plain_number(gold)
    if pred_value is not None and gold_value is not None:
        return abs(pred_value - gold_value) <= relative_tolerance * abs(gold_value) + 1e-9
    from math_verify import parse, verify

    # math-verify's timeouts use signals, which only work in the main thread; elsewhere turn them off.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse(gold, parsing_timeout=timeout)
    pred_parsed = parse(predicted, parsing_timeout=timeout)
    return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def _column(kwargs: dict, name: str, n: int, reward: str) -> list:
    if name not in kwargs:
        raise ValueError(f"reward '{reward}' needs a dataset column '{name}' (got columns {sorted(kwargs)}); "
                         f"add it to the dataset")
    values = kwargs[name]
    if len(values) != n:
        raise ValueError(f"reward '{reward}': column '{name}' has {len(values)} values for {n} completions")
    return values


@register("geometry_accuracy")
def geometry_accuracy(prompts: list, completions: list, **kwargs) -> list[float | None]:
    """1.0 / 0.0 per completion: does its <answer> block match the `answer` column? None where the
    row has no gold answer."""
    golds = _column(kwargs, "answer", len(completions), "geometry_accuracy")
    rewards: list[float | None] = []
    for completion, gold in zip(completions, golds):
        if gold is None or str(gold).strip() == "":
            rewards.append(None)
            continue
        predicted = extract_answer_tag(completion_text(completion))
        rewards.append(1.0 if predicted and answers_match(predicted, str(gold).strip()) else 0.0)
    return rewards


@register("geometry_judge")
def geometry_judge(prompts: list, completions: list, reference: list, **kwargs) -> list[float]:
    """GRAO's rule-based judge: each completion against its reference answer, +1 better / 0 tie / -1 worse.

    A correct final answer (graded like `geometry_accuracy` against the `answer` column) beats a wrong
    one; between two correct ones the shorter (in characters) wins, equal lengths tie; two wrong ones tie.
    """
    golds = _column(kwargs, "answer", len(completions), "geometry_judge")
    if len(reference) != len(completions):
        raise ValueError(f"geometry_judge: {len(reference)} references for {len(completions)} completions")

    def correct(text: str, gold: str) -> bool:
        predicted = extract_answer_tag(text)
        return bool(predicted) and answers_match(predicted, gold)

    verdicts = []
    for completion, ref, gold in zip(completions, reference, golds):
        text, ref_text, gold = completion_text(completion), completion_text(ref), str(gold).strip()
        ours, theirs = correct(text, gold), correct(ref_text, gold)
        if ours != theirs:
            verdicts.append(1.0 if ours else -1.0)
        elif ours and len(text) != len(ref_text):
            verdicts.append(1.0 if len(text) < len(ref_text) else -1.0)
        else:
            verdicts.append(0.0)
    return verdicts


# ---- auxiliary constructions ----


def _evaluate(node: ast.AST, names: dict[str, float]) -> float:
    """Exact value of a parsed arithmetic expression; ValueError on anything else."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, names)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ValueError(f"unknown name {node.id}")
        return names[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand, names)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left, right = _evaluate(node.left, names), _evaluate(node.right, names)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ValueError("division by zero")
        return _BINARY_OPS[type(node.op)](left, right)
    raise ValueError(f"unsupported expression {ast.dump(node)[:40]}")


def evaluate_expression(expression: str, names: dict[str, float]) -> float:
    """Value of an arithmetic expression over numbers and `names`; ValueError if it is not one."""
    text = expression.strip()
    if not text or not re.fullmatch(r"[\w\s.+\-*/()]+", text) or "**" in text or "//" in text:
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None
    return _evaluate(tree, names)


def _value_consistent(written: str, exact: float) -> bool:
    """Does the written value equal `exact` rounded to the number of decimals written?"""
    decimals = len(written.split(".", 1)[1]) if "." in written else 0
    return abs(float(written) - exact) <= 0.5 * 10 ** (-decimals) + 1e-9


def check_aux_statements(block: str, names: dict[str, float]) -> bool:
    """Are all statements of one aux block valid (see module doc)? Adds the names they define."""
    statements = [s.strip() for s in re.split(r"[;\n]", block) if s.strip()]
    if not statements:
        return False
    for statement in statements:
        parts = [p.strip() for p in statement.split("=")]
        if len(parts) not in (2, 3) or not _NAME.fullmatch(parts[0]):
            return False
        try:
            exact = evaluate_expression(parts[1], names)
        except ValueError:
            return False
        if len(parts) == 3:
            if not re.fullmatch(_NUMBER, parts[2]) or not _value_consistent(parts[2], exact):
                return False
        names[parts[0]] = exact
    return True


def prompt_bindings(prompt: Any) -> dict[str, float]:
    """Names the prompt binds to numbers ("A=30, B=70" -> {"A": 30.0, "B": 70.0})."""
    if isinstance(prompt, list):
        text = " ".join(m.get("content", "") for m in prompt if isinstance(m, dict) and isinstance(m.get("content"), str))
    else:
        text = str(prompt)
    return {name: float(value) for name, value in _PROMPT_BINDING.findall(text)}


def has_valid_aux(text: str, bindings: dict[str, float] | None = None) -> bool:
    """Does the completion text hold a valid auxiliary construction (see module doc)?"""
    think = _THINK.search(text)
    if think is None:
        return False
    reasoning = think.group(1)
    blocks = _AUX_BLOCK.findall(reasoning)
    # Every <aux> opened inside think must be closed there, and none may appear after </think>.
    if not blocks or reasoning.count("<aux>") != len(blocks) or reasoning.count("</aux>") != len(blocks):
        return False
    if "<aux>" in text[think.end():] or "<aux>" in text[: think.start()]:
        return False
    names = dict(bindings or {})
    return all(check_aux_statements(block, names) for block in blocks)


def uses_aux(text: str) -> bool:
    """Does the completion attempt a construction at all (an <aux> tag anywhere), valid or not?"""
    return "<aux>" in text


@register("aux_construction")
def aux_construction(prompts: list, completions: list, **kwargs) -> list[float]:
    """1.0 per completion with a valid auxiliary construction (see module doc), else 0.0."""
    if len(prompts) != len(completions):
        raise ValueError(f"reward 'aux_construction': {len(prompts)} prompts for {len(completions)} completions")
    return [1.0 if has_valid_aux(completion_text(c), prompt_bindings(p)) else 0.0 for p, c in zip(prompts, completions)]
