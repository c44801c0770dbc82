"""Soak: the README's main job for many steps, its memory sampled every step; does it leak?

Runs `align/train.py recipe=gcpo_geometry` (evaluation and checkpoints on, as a user runs it) and
polls the resident memory of the whole process tree (the trainer and any engine or reward worker
it started) about every 0.2 s, keeping the peak seen during each step. The verdict compares the
mean RSS of the last 50 steps with the mean of the 50 after warm-up: growth under 5% passes.

    .venv/bin/python bench/soak.py --steps 500            # ~15 min on 2 idle cores
    .venv/bin/python bench/soak.py --steps 60 --warmup 10 --window 10   # a quick look

Writes bench/results/soak.json (per-step peak RSS, the two window means, the growth).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def tree_rss(process: psutil.Process) -> int:
    """Bytes resident in `process` and all its descendants (those that exited meanwhile count 0)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def steps_logged(metrics: Path) -> int:
    try:
        return sum(1 for _ in metrics.open())
    except FileNotFoundError:
        return 0


def soak(steps: int, run_dir: Path, extra: list[str], poll_s: float = 0.2, recipe: str = "gcpo_geometry") -> dict[int, float]:
    """Peak tree RSS in MiB per step (step k = the time while metrics.jsonl had k-1 rows)."""
    cmd = [sys.executable, str(ROOT / "align" / "train.py"), f"recipe={recipe}", f"train.steps={steps}",
           f"log.run_dir={run_dir}", "log.console=false", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    peaks: dict[int, float] = {}
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            step = steps_logged(run_dir / "metrics.jsonl") + 1
            try:
                rss = tree_rss(root) / 2**20
            except psutil.NoSuchProcess:
                break
            if step <= steps:
                peaks[step] = max(peaks.get(step, 0.0), rss)
            time.sleep(poll_s)
    if proc.returncode:
        raise SystemExit(f"the run failed (exit {proc.returncode}); see {run_dir}.log")
    return peaks


def window_mean(peaks: dict[int, float], first: int, count: int) -> float:
    values = [peaks[s] for s in range(first, first + count) if s in peaks]
    if not values:
        raise SystemExit(f"no RSS samples for steps {first}..{first + count - 1}; run more steps")
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50, help="steps left out before the first window")
    parser.add_argument("--window", type=int, default=50, help="steps averaged at the start and at the end")
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/align-soak"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    parser.add_argument("extra", nargs="*", help="more key=value overrides for the run")
    args = parser.parse_args(argv)
    if args.warmup + 2 * args.window > args.steps:
        parser.error(f"--steps {args.steps} is shorter than --warmup + 2 x --window")
    load = os.getloadavg()[0]
    subprocess.run(["rm", "-rf", str(args.run_dir)], check=True)  # train.py refuses an old run's folder
    t0 = time.time()
    peaks = soak(args.steps, args.run_dir, args.extra)
    start = window_mean(peaks, args.warmup + 1, args.window)
    end = window_mean(peaks, args.steps - args.window + 1, args.window)
    growth = (end - start) / start
    result = {"steps": args.steps, "warmup": args.warmup, "window": args.window, "extra": args.extra,
              "rss_mib_start": start, "rss_mib_end": end, "growth": growth, "passed": growth < 0.05,
              "minutes": (time.time() - t0) / 60, "load_before": load, "load_after": os.getloadavg()[0],
              "peak_rss_mib_per_step": peaks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"| steps | RSS steps {args.warmup + 1}-{args.warmup + args.window} (MiB) | RSS last {args.window} (MiB) "
          "| growth | < 5% |")
    print("|---|---|---|---|---|")
    print(f"| {args.steps} | {start:.0f} | {end:.0f} | {growth:+.1%} | {'yes' if growth < 0.05 else 'NO'} |")
    print(f"({result['minutes']:.1f} min, load {load:.1f} -> {result['load_after']:.1f}; {args.out})")
    return result


if __name__ == "__main__":
    main()
