"""What the learning benchmarks share: one training run as a subprocess of align/train.py, its
metrics rows, and the held-out curves of all runs as a plot next to the results JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_STYLES = ["-", "--", ":"]


def train(recipe: str, seed: int, run_dir: Path, extra: list[str], *, steps: int | None = None,
          minutes: float | None = None, eval_every: int, threads: int | None = None, cores: str | None = None) -> None:
    """One run of `recipe` into `run_dir` (replaced if it exists), for `steps` and/or `minutes`;
    its console output goes to `<run_dir>.log`. `threads` overrides OMP_NUM_THREADS (default 1);
    `cores` pins the run to those CPUs (taskset's list, e.g. "0")."""
    budget = [f"train.steps={steps or 100000}"] + ([f"train.max_minutes={minutes}"] if minutes else [])
    cmd = [sys.executable, str(ROOT / "align" / "train.py"), f"recipe={recipe}", f"train.seed={seed}", *budget,
           f"log.eval_every={eval_every}", f"log.run_dir={run_dir}", "log.console=false", "log.save_every=0",
           "log.report_to=[]", *extra]
    # One thread per run unless told otherwise: the published numbers were measured so (two runs
    # side by side on 2 cores), and results depend on the thread count's summation order.
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd.append(f"train.cpu_threads={env['OMP_NUM_THREADS']}")  # align sets its threads itself otherwise
    if cores is not None:
        cmd = ["taskset", "-c", cores, *cmd]
    shutil.rmtree(run_dir, ignore_errors=True)  # train.py refuses to start into an old run's folder
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def add_variant_option(parser) -> None:
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=key=value,key=value",
                        help="one more run per seed: the first of --algos with these overrides, named NAME "
                             "(repeatable; e.g. --variant cispo=loss_type=cispo,epsilon_high=5)")


def add_merge_option(parser) -> None:
    parser.add_argument("--merge", action="store_true", help="add to the runs already in --out instead of replacing them")


def results_path(stem: str, setting: str = "default") -> str:
    """bench/results/STEM.json, or STEM_SETTING.json for a setting other than the default."""
    return str(ROOT / "bench" / "results" / f"{stem}{'' if setting == 'default' else '_' + setting}.json")


def split_overrides(text: str) -> list[str]:
    """'a=1,b=[x,y],c=2' -> ['a=1', 'b=[x,y]', 'c=2']: commas inside brackets belong to a list value."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def with_variants(algos: list[str], variants: list[str], runs: dict[str, tuple[str, list[str]]]) -> list[str]:
    """The run names in order: `algos`, then each `--variant NAME=overrides`, added to `runs`
    (name -> (recipe, overrides)) as the first of `algos` with the variant's overrides after its own."""
    names = list(algos)
    for spec in variants:
        name, _, rest = spec.partition("=")
        overrides = split_overrides(rest)
        if not name or not overrides or any("=" not in o for o in overrides):
            raise SystemExit(f"--variant {spec!r}: write NAME=key=value[,key=value...]")
        if name in runs or name in names:
            raise SystemExit(f"--variant {spec!r}: the name {name!r} is taken; pick another")
        recipe, base = runs[algos[0]]
        runs[name] = (recipe, [*base, *overrides])
        names.append(name)
    return names


def prepare(out: str, merge: bool = False) -> tuple[Path, dict]:
    """(the folder the runs go in, next to `out`; the results already in `out` when `merge`, else {})."""
    work = Path(out).with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(Path(out).read_text())["results"] if merge and Path(out).exists() else {}
    return work, results


def metric_rows(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training-step rows, evaluation rows) of a run's metrics.jsonl."""
    from align.telemetry.plots import read_metrics  # the repository root is on sys.path by now

    rows = read_metrics(run_dir / "metrics.jsonl")  # null (a NaN logged) reads as NaN
    return [r for r in rows if "loss" in r], [r for r in rows if any(k.startswith("eval/") for k in r)]


def save(out: str, args, started: float, results: dict, ylabel: str, colors: dict[str, str]) -> None:
    """Write the results JSON (with the command's arguments and the load average) and the plot of
    every run's held-out curve (`summary["curve"]`: [(step, value), ...]), one colour per algorithm
    and one line style per seed."""
    if getattr(args, "merge", False) and Path(out).exists():  # runs written meanwhile by a run beside this one stay
        merged = json.loads(Path(out).read_text())["results"]
        for name, runs in results.items():
            merged.setdefault(name, {}).update(runs)
        results = merged
    payload = {"args": vars(args), "wall_seconds": time.time() - started, "loadavg": os.getloadavg(), "results": results}
    Path(out).write_text(json.dumps(payload, indent=1))
    png = Path(out).with_suffix(".png")
    plot(results, png, ylabel, colors)
    print(f"wrote {out} and {png}")


def plot(results: dict, png: Path, ylabel: str, colors: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, runs) in enumerate(results.items()):
        for seed, summary in runs.items():
            steps, values = zip(*summary["curve"])
            ax.plot(steps, values, label=f"{name} seed {seed}", color=colors.get(name, f"C{i % 10}"),
                    linestyle=SEED_STYLES[int(seed) % len(SEED_STYLES)])
    ax.set_xlabel("RL step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
