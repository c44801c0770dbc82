"""What a run says on the console about what it learned: a table at every held-out evaluation and a
before -> after summary at the end, built from the logged metrics (pure functions; RunLogger prints).

An algorithm declares its own signals (`Algorithm.signals`: a tuple of `Signal`) and they appear
in the tables and in metrics.png beside the held-out accuracy, so a new algorithm only lists the
metric keys it logs; nothing here names an algorithm.

Held-out metrics come from `align.training.evaluation.evaluate_engine`: `eval/mean@k` overall, `eval/<group>/mean@k`
per value of the dataset's group column (the problem family), `eval/<column>/<value>/...` per value
of other subset columns (e.g. `eval/aux_helps/yes/...`). A training metric (no `eval/` prefix) is
shown as its mean over the steps since the previous evaluation, so one noisy step does not decide it.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

ACCURACY_KEY = re.compile(r"^eval/mean@(\d+)$")
GROUP_ACCURACY_KEY = re.compile(r"^eval/([^/]+)/mean@(\d+)$")


@dataclass(frozen=True)
class Signal:
    """One metric an algorithm calls its own: shown in the evaluation tables and drawn in metrics.png.

    key: the metric key as logged ("gcpo/mask_neg", "eval/aux_helps/no/aux_construction/rate").
    label: what it measures, in words, for the console.
    panel: the plot panel it is drawn in; signals naming the same panel share one set of axes.
    """

    key: str
    label: str
    panel: str


def accuracy_keys(keys) -> tuple[str | None, list[tuple[str, str]]]:
    """The overall held-out accuracy key and (group, key) per group, groups in sorted order."""
    overall = next((k for k in sorted(keys) if ACCURACY_KEY.match(k)), None)
    groups = sorted((m.group(1), k) for k in keys if (m := GROUP_ACCURACY_KEY.match(k)))
    return overall, groups


def window_mean(history: list[tuple[int, dict[str, float]]], key: str, after: int, upto: int) -> float | None:
    """Mean of `key` over logged steps in (after, upto]; None when it was not logged there."""
    values = [v[key] for s, v in history if after < s <= upto and key in v and math.isfinite(v[key])]
    return sum(values) / len(values) if values else None


def _value_at(history, key: str, step: int, previous_step: int) -> float | None:
    if key.startswith("eval/"):
        return next((v[key] for s, v in reversed(history) if s == step and key in v), None)
    return window_mean(history, key, previous_step, step)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return ""
    return f"{after - before:+.3f}"


def _rows(history, signals, step: int, previous_step: int, first_eval: int, first_train: tuple[int, int]):
    """(label, value at start, value now) for accuracy, per group and every declared signal logged."""
    latest = next((v for s, v in reversed(history) if s == step and any(k.startswith("eval/") for k in v)), {})
    overall, groups = accuracy_keys(latest)
    rows = []
    if overall:
        k = ACCURACY_KEY.match(overall).group(1)
        rows.append((f"held-out accuracy (mean@{k})", _value_at(history, overall, first_eval, -1),
                     latest[overall], True))
    for group, key in groups:
        rows.append((f"  {group}", _value_at(history, key, first_eval, -1), latest[key], False))
    for signal in signals:
        before = _value_at(history, signal.key, first_eval, -1) if signal.key.startswith("eval/") else \
            window_mean(history, signal.key, *first_train)
        now = _value_at(history, signal.key, step, previous_step)
        if before is None and now is None:
            continue
        rows.append((signal.label, before, now, False))
    return rows


def eval_steps(history) -> list[int]:
    """Steps at which a held-out evaluation was logged, in order."""
    steps = []
    for s, v in history:
        if any(ACCURACY_KEY.match(k) for k in v) and (not steps or steps[-1] != s):
            steps.append(s)
    return steps


def _first_train_window(history, evals: list[int]) -> tuple[int, int]:
    """Training steps that describe the start: up to the second evaluation (at least 1 step)."""
    first = evals[0] if evals else 0
    upto = evals[1] if len(evals) > 1 else first + 1
    return first, max(upto, first + 1)


def eval_table(history: list[tuple[int, dict[str, float]]], signals: tuple[Signal, ...], title: str) -> Table | None:
    """The table printed after the latest evaluation in `history` (a list of (step, metrics)); None
    when the latest record holds no held-out accuracy."""
    evals = eval_steps(history)
    if not evals:
        return None
    step, previous = evals[-1], (evals[-2] if len(evals) > 1 else evals[-1] - 1)
    rows = _rows(history, signals, step, previous, evals[0], _first_train_window(history, evals))
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column("")
    if step == evals[0]:  # the starting point: nothing to compare with yet
        table.add_column(f"step {step}", justify="right")
        for label, _, now, bold in rows:
            table.add_row(label, _fmt(now), style="bold" if bold else None)
        return table
    table.add_column(f"step {evals[0]}", justify="right")
    table.add_column(f"step {step}", justify="right")
    table.add_column("change", justify="right")
    for label, before, now, bold in rows:
        table.add_row(label, _fmt(before), _fmt(now), _change(before, now), style="bold" if bold else None)
    return table


def summary_table(history, signals: tuple[Signal, ...]) -> Table | None:
    """Before -> after over the whole run: the first and last evaluation (training signals: their
    mean up to the second evaluation vs since the second-to-last)."""
    evals = eval_steps(history)
    if not evals:
        return None
    return eval_table(history, signals, f"what the run learned (step {evals[0]} -> step {evals[-1]})")


def where_to_look(run_dir, png_path, tensorboard_dir) -> str:
    """The closing lines: where the run is and how to look at it."""
    lines = [f"run folder: {run_dir}", f"plot:       {png_path}  (open it in any image viewer)"]
    if tensorboard_dir is not None:
        # The environment's own tensorboard: `.venv/bin` is usually not on PATH.
        local = Path(sys.executable).parent / "tensorboard"
        command = str(local) if local.exists() else "tensorboard"
        lines.append(f"TensorBoard: {command} --logdir {tensorboard_dir}  (then open http://localhost:6006)")
    lines.append(f"metrics:    {run_dir}/metrics.jsonl")
    lines.append(f"samples:    {run_dir}/samples.jsonl")
    return "\n".join(lines)
