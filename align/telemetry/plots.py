"""A one-page PNG of a run's main training curves, read from its metrics.jsonl."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# The default page, in panel order: held-out accuracy (overall, then per group), reward, the
# algorithm's declared signals (inserted after these), then length, throughput and optimisation
# health. (title, pattern on the key, most keys in the panel). Keys whose values never change over
# the run (a KL term that is off, a clip fraction of 0) are left out, and so is a panel left empty.
LEADING_PANELS: list[tuple[str, str, int]] = [
    # pass@1 is mean@1 in other words: pass@k only for k > 1
    ("held-out accuracy", r"^eval/mean@\d+$|^eval/pass@([2-9]|\d\d+)$", 2),
    ("held-out accuracy per group", r"^eval/[^/]+/mean@\d+$", 12),
    ("reward (training batch)", r"^reward/mean$|^reward/[^/]+/mean$", 5),
]
TRAILING_PANELS: list[tuple[str, str, int]] = [
    ("completion length", r"^(completion|response)_?len(/mean)?$", 1),
    ("throughput (tokens/s)", r"tokens?_per_s|tok(en)?s?/s", 2),
    ("loss", r"^loss$", 1),
    ("KL", r"(^|[/_])kl($|[/_])", 2),
    ("clip fraction", r"clip", 3),
    ("entropy", r"^entropy$", 1),
]
MAX_PANELS = 16
COLUMNS = 3
SMOOTH_MIN_POINTS = 12  # per-step curves with at least this many points get a moving average


def read_metrics(jsonl_path: str | Path) -> list[dict]:
    """The records of a metrics JSONL file; a missing file, blank lines or a torn last line are skipped.

    A null value is a metric that was NaN or inf when logged (RunLogger writes those as null, valid
    JSON): it comes back as NaN, so every reader sees a float. Older files' bare NaN reads as NaN too."""
    path = Path(jsonl_path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a crash mid-write leaves half a line
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append({key: math.nan if value is None else value for key, value in record.items()})
    return records


def metric_series(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """key -> (steps, values), sorted by step; non-numeric and non-finite values are left out.

    Records are read in file order. A step lower than the one before marks a resumed run: the old
    points from that step on are dropped, so the curve shows what the resumed run did.
    """
    by_key: dict[str, dict[float, float]] = {}
    last_step = -math.inf
    for record in records:
        step = record["step"]
        if step < last_step:
            for points in by_key.values():
                for stale in [s for s in points if s >= step]:
                    del points[stale]
        last_step = step
        for key, value in record.items():
            if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                by_key.setdefault(key, {})[step] = float(value)
    return {key: (sorted(pts), [pts[s] for s in sorted(pts)]) for key, pts in by_key.items() if pts}


def is_constant(values: list[float]) -> bool:
    """True for a curve that never moves (two or more points, all equal): a panel of it says nothing."""
    return len(values) > 1 and max(values) - min(values) <= 1e-12 * max(1.0, abs(values[0]))


def default_panels(series: dict[str, tuple[list[float], list[float]]], signals=()) -> list[tuple[str, list[str]]]:
    """(title, keys) per panel of the default page; each key at most once, constant keys left out."""
    # The overall held-out accuracy is always drawn: when it stays flat, that flat line is the result.
    moving = [k for k in sorted(series) if not is_constant(series[k][1]) or re.match(r"^eval/mean@\d+$", k)]
    used: set[str] = set()
    panels: list[tuple[str, list[str]]] = []

    def add(title: str, keys: list[str]) -> None:
        keys = [k for k in keys if k in moving and k not in used]
        if keys:
            used.update(keys)
            panels.append((title, keys))

    for title, pattern, limit in LEADING_PANELS:
        add(title, [k for k in moving if re.search(pattern, k, re.IGNORECASE) and k not in used][:limit])
    for panel in dict.fromkeys(s.panel for s in signals):  # declared order, one panel per name
        add(panel, [s.key for s in signals if s.panel == panel])
    for title, pattern, limit in TRAILING_PANELS:
        add(title, [k for k in moving if re.search(pattern, k, re.IGNORECASE) and k not in used][:limit])
    return panels[:MAX_PANELS]


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` points (shorter at the start), same length as `values`."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _short_label(key: str, keys: list[str]) -> str:
    """The part of `key` that tells it apart from the other keys of its panel."""
    if len(keys) == 1:
        return key
    parts = key.split("/")
    common = [p for p in parts if all(p in k.split("/") for k in keys)]
    return "/".join(p for p in parts if p not in common) or key


def plot_metrics(jsonl_path: str | Path, png_path: str | Path, keys: list[str] | None = None, signals=()) -> Path:
    """Write a grid of line plots (x = step) to `png_path`.

    By default the panels of `default_panels` (held-out accuracy first; the algorithm's declared
    `signals` after reward); `keys` instead draws one panel per listed key (absent ones skipped).
    Noisy per-step curves are drawn faint with a moving average on top; sparse curves (held-out
    evaluations) with markers. With nothing to plot the PNG holds a short note instead, so callers
    never need to check first.
    """
    series = metric_series(read_metrics(jsonl_path))
    if keys is not None:
        panels = [(k, [k]) for k in keys if k in series]
    else:
        panels = default_panels(series, signals)
    labels = {s.key: s.label for s in signals}

    if panels:
        rows = math.ceil(len(panels) / COLUMNS)
        cols = min(len(panels), COLUMNS)
        fig = Figure(figsize=(4.6 * cols, 3.0 * rows), layout="constrained")
        for i, (title, panel_keys) in enumerate(panels):
            ax = fig.add_subplot(rows, cols, i + 1)
            for j, key in enumerate(panel_keys):
                steps, values = series[key]
                color = f"C{j % 10}"
                label = labels.get(key, _short_label(key, panel_keys))
                if len(steps) >= SMOOTH_MIN_POINTS:
                    window = max(3, len(steps) // 15)
                    ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
                    ax.plot(steps, moving_average(values, window), color=color, linewidth=1.6, label=label)
                else:
                    ax.plot(steps, values, color=color, marker=".", linewidth=1.3, label=label)
            ax.set_title(title if len(panel_keys) > 1 or title != panel_keys[0] else panel_keys[0], fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if len(panel_keys) > 1:
                ax.legend(fontsize=6, ncol=2 if len(panel_keys) > 4 else 1)
            elif panel_keys[0] in labels or title != panel_keys[0]:
                ax.legend(fontsize=6)
    else:
        fig = Figure(figsize=(5, 2))
        what = "the requested keys" if keys is not None else "metrics"
        fig.text(0.5, 0.5, f"no {what} logged yet in\n{Path(jsonl_path).name}", ha="center", va="center")

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    partial = png_path.with_name(png_path.name + ".partial.png")
    FigureCanvasAgg(fig).print_png(str(partial))
    os.replace(partial, png_path)  # a viewer polling the file never sees half an image
    return png_path
