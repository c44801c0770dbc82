"""A one-page PNG of a run's main training curves, read from its metrics.jsonl."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Which metrics a default plot shows, in panel order: (pattern on the key, most keys it may take).
# Patterns rather than exact names so algorithm-specific keys (gcpo/acc_with_aux, loss/pg) appear too.
DEFAULT_PANELS: list[tuple[str, int]] = [
    (r"^reward([/_]mean)?$|reward.*mean", 3),
    (r"acc|correct|pass@|mean@", 4),
    (r"(^|/)loss", 3),
    (r"(^|[/_])kl($|[/_])", 2),
    (r"clip", 3),
    (r"(completion|response)_?len.*mean|(completion|response)_?len$", 1),
    (r"tokens?_per_s|tok(en)?s?/s", 2),
    (r"probe", 1),
]
MAX_PANELS = 16
COLUMNS = 3


def read_metrics(jsonl_path: str | Path) -> list[dict]:
    """The records of a metrics JSONL file; a missing file, blank lines or a torn last line are skipped."""
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
            records.append(record)
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


def default_keys(available: list[str]) -> list[str]:
    """The keys worth a panel, in DEFAULT_PANELS order, each key at most once."""
    chosen: list[str] = []
    for pattern, limit in DEFAULT_PANELS:
        matches = [k for k in sorted(available) if re.search(pattern, k, re.IGNORECASE) and k not in chosen]
        chosen += matches[:limit]
    return chosen[:MAX_PANELS]


def plot_metrics(jsonl_path: str | Path, png_path: str | Path, keys: list[str] | None = None) -> Path:
    """Write a grid of line plots (one panel per metric, x = step) to `png_path`.

    `keys` picks the metrics (absent ones are skipped); by default reward mean, accuracy-like keys,
    loss, KL, clip fractions, completion length, tokens/s and probe diff, whichever were logged.
    With nothing to plot the PNG holds a short note instead, so callers never need to check first.
    """
    series = metric_series(read_metrics(jsonl_path))
    chosen = [k for k in (keys if keys is not None else default_keys(list(series))) if k in series]

    if chosen:
        rows = math.ceil(len(chosen) / COLUMNS)
        cols = min(len(chosen), COLUMNS)
        fig = Figure(figsize=(4.2 * cols, 2.8 * rows), layout="constrained")
        for i, key in enumerate(chosen):
            ax = fig.add_subplot(rows, cols, i + 1)
            steps, values = series[key]
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, linewidth=1.2)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
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
