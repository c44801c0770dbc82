"""What a run writes as it trains: metrics.jsonl, samples.jsonl, TensorBoard events, a rich
progress bar with ETA, and metrics.png at the end; and the same metrics and samples to the
experiment trackers of log.report_to (trackers.py). Only the main process writes; on other ranks
every method is a no-op, so the trainer calls them unconditionally.

    run_dir/metrics.jsonl   one line per log() call: {"step", "time", **metrics}, NaN/inf as null
    run_dir/samples.jsonl   one line per sample: {"step", **sample}
    run_dir/tb/             TensorBoard scalars (tensorboard --logdir run_dir/tb)
    run_dir/metrics.png     the main curves, written by close()
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from align.telemetry.plots import plot_metrics, read_metrics
from align.telemetry.report import Signal, eval_table, summary_table, where_to_look

if TYPE_CHECKING:
    from align.telemetry.trackers import ExperimentTrackers

# Metrics shown beside the bar: label -> patterns on the key, most preferred first; the first
# (sorted) key matching the earliest pattern is shown.
BAR_METRICS: dict[str, list[str]] = {
    "reward": [r"^reward([/_]mean)?$", r"reward.*mean"],
    "loss": [r"^loss$", r"^loss[/_](total|mean)$", r"(^|/)loss"],
    "tok/s": [r"^tokens?_per_s(ec)?$", r"tokens?_per_s|tok(en)?s?/s"],
}
SAMPLES_SHOWN = 4
PROMPT_TAIL_CHARS = 60
COMPLETION_CHARS = 160


def _as_number(key: str, value: Any) -> float:
    try:
        return float(value)  # accepts ints, bools, numpy scalars and 0-d tensors
    except (TypeError, ValueError):
        raise TypeError(
            f"metric '{key}' is a {type(value).__name__}, not a number; log numbers only (use .item() for tensors)"
        ) from None


def _step_of(line: str) -> float | None:
    """The step of one JSONL row; None for a torn or foreign line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else None


def _format_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _bar_keys(keys: list[str]) -> list[tuple[str, str]]:
    """(label, key) for each BAR_METRICS entry that some logged key matches."""
    found = []
    for label, patterns in BAR_METRICS.items():
        for pattern in patterns:
            match = next((k for k in sorted(keys) if re.search(pattern, k)), None)
            if match is not None:
                found.append((label, match))
                break
    return found


def _clip(text: str, head: int) -> str:
    return text[:head] + ("..." if len(text) > head else "")


def _group_table(step: int, samples: list[dict]) -> Table:
    """One block per prompt: the templated prompt's tail, then each of its G completions with reward and advantage."""
    table = Table(title=f"samples at step {step}", show_lines=False, expand=True)
    table.add_column("prompt (tail)", ratio=2, overflow="fold")
    table.add_column("completion", ratio=5, overflow="fold")
    table.add_column("reward", justify="right", no_wrap=True)
    table.add_column("adv", justify="right", no_wrap=True)
    for sample in samples:
        prompt = str(sample.get("prompt", ""))
        tail = ("..." if len(prompt) > PROMPT_TAIL_CHARS else "") + prompt[-PROMPT_TAIL_CHARS:]
        if "answer" in sample:
            tail += f"\n(gold: {_clip(str(sample['answer']), 40)})"
        for j, completion in enumerate(sample["completions"]):
            # Text cells: model output and prompts are never read as rich markup ("[/INST]" would break it).
            table.add_row(Text(tail if j == 0 else ""), Text(_clip(str(completion.get("text", "")), COMPLETION_CHARS)),
                          _format_number(float(completion["reward"])), _format_number(float(completion["advantage"])),
                          end_section=j == len(sample["completions"]) - 1)
    return table


class RunLogger:
    """Logs one training run into `run_dir`; `total_steps` sizes the progress bar and its ETA."""

    def __init__(
        self,
        run_dir: str | Path,
        total_steps: int,
        *,
        is_main: bool = True,
        tensorboard: bool = True,
        console: bool = True,
        signals: tuple[Signal, ...] = (),
        trackers: ExperimentTrackers | None = None,
    ) -> None:
        self.enabled = is_main
        self.trackers = trackers  # W&B, trackio, MLflow (log.report_to): metrics and samples go there too
        # The algorithm's own metrics (report.Signal): in the evaluation tables and in metrics.png.
        self.signals = tuple(signals)
        self._history: list[tuple[int, dict[str, float]]] = []
        self.closed = False
        if not is_main:
            return
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.total_steps = total_steps
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.samples_path = self.run_dir / "samples.jsonl"
        self.png_path = self.run_dir / "metrics.png"
        # Appending: a resumed run continues the same file (resume_from drops the rows after its checkpoint), and
        # its tables compare with the run's first evaluation, not the first after the resume.
        self._history = [(r["step"], {k: float(v) for k, v in r.items() if k not in ("step", "time")
                                      and isinstance(v, (int, float)) and not isinstance(v, bool)})
                         for r in read_metrics(self.metrics_path)]
        self._metrics_file = open(self.metrics_path, "a")

        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # 1 s import: only when asked for

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))

        self._console = Console(highlight=False) if console else None
        self._live = self._console is not None and self._console.is_terminal
        # The bar also keeps the ETA when nothing is drawn (console off, or output to a file); the
        # long estimate window suits steps that take minutes.
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[shown]}"),
            console=self._console,
            disable=not self._live,
            speed_estimate_period=3600.0,
        )
        self._task = self._progress.add_task("train", total=total_steps, shown="")
        self._first_log = True
        self._progress.start()

    def resume_from(self, step: int) -> None:
        """A run resumed from the checkpoint of `step`: drop the rows logged after it (metrics.jsonl, samples.jsonl).

        The crashed run logged steps the resumed one trains again; kept, every such step would be in
        the file twice. Each file is rewritten to a temporary one and renamed over it, so a crash here
        leaves the old file or the new one, never half of one; a torn last line goes too.
        """
        if not self.enabled:
            return
        self._metrics_file.close()
        for path in (self.metrics_path, self.samples_path):
            if path.is_file():
                kept = [line for line in path.read_text().splitlines()
                        if (logged := _step_of(line)) is not None and logged <= step]  # as written, not re-encoded
                partial = path.with_name(path.name + ".tmp")
                partial.write_text("".join(line + "\n" for line in kept))
                os.replace(partial, path)
        self._history = [(s, v) for s, v in self._history if s <= step]
        self._metrics_file = open(self.metrics_path, "a")

    # ------------------------------------------------------------------------------------ metrics
    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record `metrics` at `step`: a JSONL line (flushed), TensorBoard scalars, the trackers, and the bar.

        A None value (nothing to report this step, e.g. an empty group) is left out.
        """
        if not self.enabled or self.closed:
            return
        values = {key: _as_number(key, value) for key, value in metrics.items() if value is not None}
        # NaN and inf as null: json.dumps would write bare NaN / Infinity, which is not JSON (jq, JavaScript
        # and most parsers other than Python's refuse the line). read_metrics turns null back into NaN.
        finite = {key: value if math.isfinite(value) else None for key, value in values.items()}
        self._metrics_file.write(json.dumps({"step": step, "time": time.time(), **finite}, allow_nan=False) + "\n")
        self._metrics_file.flush()
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, global_step=step)
            self._writer.flush()
        if self.trackers is not None:
            self.trackers.log(step, values)
        if self._first_log:  # a resumed run redoes the steps after its checkpoint: forget the old ones
            self._history = [(s, v) for s, v in self._history if s < step]
        self._history.append((step, values))
        self._advance(step, values)
        if any(key.startswith("eval/") for key in values):
            self._show(eval_table(self._history, self.signals, f"held-out evaluation at step {step}"))

    def _show(self, renderable) -> None:
        if self._console is not None and renderable is not None:
            self._console.print(renderable)

    def _advance(self, step: int, values: dict[str, float]) -> None:
        shown = "  ".join(f"{label} {_format_number(values[key])}" for label, key in _bar_keys(list(values)))
        if self._first_log:
            # A resumed run starts mid-way: restart the speed estimate there, or the ETA would count
            # the resumed-from steps as done in no time.
            self._progress.reset(self._task, completed=step, shown=shown)
            self._first_log = False
        elif shown:
            self._progress.update(self._task, completed=step, shown=shown)
        else:  # e.g. an eval-only log: keep the training metrics on the bar
            self._progress.update(self._task, completed=step)
        if self._console is not None and not self._live and shown:
            # No live bar (output goes to a file): one plain line per log instead.
            remaining = self._progress.tasks[0].time_remaining
            eta = str(datetime.timedelta(seconds=round(remaining))) if remaining is not None else "?"
            self._console.print(f"step {step}/{self.total_steps}  {shown}  eta {eta}", markup=False)

    # ------------------------------------------------------------------------------------ samples
    def log_samples(self, step: int, samples: list[dict]) -> None:
        """Append each sample (prompt, completion, reward, ...) to samples.jsonl and show a few."""
        if not self.enabled or self.closed:
            return
        with open(self.samples_path, "a") as f:
            for sample in samples:
                f.write(json.dumps({"step": step, **sample}, default=str) + "\n")
        if self.trackers is not None:
            self.trackers.log_samples(step, samples)
        if self._console is None or not samples:
            return
        if "completions" in samples[0]:  # a prompt with its whole group (align/telemetry/samples.py)
            self._console.print(_group_table(step, samples[:SAMPLES_SHOWN]))
            return
        table = Table(title=f"samples at step {step}", show_lines=True, expand=True)
        table.add_column("prompt (tail)", ratio=2, overflow="fold")
        table.add_column("completion", ratio=5, overflow="fold")
        table.add_column("reward", justify="right", no_wrap=True)
        for sample in samples[:SAMPLES_SHOWN]:
            prompt = str(sample.get("prompt", ""))
            completion = str(sample.get("completion", ""))
            reward = sample.get("reward")
            table.add_row(
                ("..." if len(prompt) > PROMPT_TAIL_CHARS else "") + prompt[-PROMPT_TAIL_CHARS:],
                completion[:COMPLETION_CHARS] + ("..." if len(completion) > COMPLETION_CHARS else ""),
                _format_number(float(reward)) if isinstance(reward, (int, float)) else str(reward),
            )
        self._console.print(table)

    # ------------------------------------------------------------------------------------ text
    def print(self, msg: str) -> None:
        """A one-off message (printed above the bar, not into the metrics)."""
        if not self.enabled:
            return
        if self._console is not None:
            self._console.print(msg, markup=False)
        else:
            print(msg, flush=True)

    def print_config(self, text: str) -> None:
        """Show the resolved config (YAML text) once at the start of a run."""
        if not self.enabled:
            return
        if self._console is not None:
            self._console.print(Panel(Syntax(text, "yaml", background_color="default"), title="config", expand=False))
        else:
            print(text, flush=True)

    # ------------------------------------------------------------------------------------ end
    def close(self) -> None:
        """Stop the bar, close the files, TensorBoard and the trackers, and write metrics.png. Safe to call twice."""
        if not self.enabled or self.closed:
            return
        self.closed = True
        self._progress.stop()
        self._metrics_file.close()
        if self._writer is not None:
            self._writer.close()
        if self.trackers is not None:
            self.trackers.finish()
        plot_metrics(self.metrics_path, self.png_path, signals=self.signals)
        self._show(summary_table(self._history, self.signals))
        if self._console is not None:
            tb = self.run_dir / "tb" if self._writer is not None else None
            self._console.print(where_to_look(self.run_dir, self.png_path, tb), markup=False, highlight=False,
                                   soft_wrap=True)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
