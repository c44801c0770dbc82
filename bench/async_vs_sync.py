"""Asynchronous rollouts against the synchronous loop on the README's main job (recipe=gcpo_geometry),
GRAO on the same data (--recipe grao_geometry), or agent episodes (--recipe salt_grid: SALT in the
grid room, held-out success instead of accuracy).

    .venv/bin/python bench/async_vs_sync.py [--seeds 0 1 2] [--steps 200] [--variants sync k1 k2 colocated]
        [--recipe gcpo_geometry|grao_geometry|salt_grid] [--set KEY=VALUE ...] [--out bench/results/async_vs_sync.json]
        # table + the JSON + a .png beside it (held-out accuracy against steps and against wall time)

Variants, each run alone on the machine:
- sync / k1 / k2: the trainer on core 0 (one thread) and a rollout server (`python -m align serve`,
  vLLM pinned to core 1) with rollout.max_staleness = 0 / 1 / 2;
- colocated: the README's command as it is, engine and trainer in one process on both cores, both
  phases taking turns (what overlap has to beat here).
Reported per run: wall time, steps per hour, the final held-out accuracy, and per step how long
the trainer waited for the engine (`time/trainer_wait`) and the engine for the trainer
(`time/engine_idle`); per variant the mean over seeds and the wall time relative to sync.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._runs import SEED_STYLES, metric_rows, train  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STALENESS = {"sync": 0, "k1": 1, "k2": 2, "sync_over": 0, "k1_over": 1}
# *_over: dynamic sampling's first round oversampled (--oversample), so that refill rounds, which
# run in the step even at k >= 1, are rare: the first round is the one generated ahead.
OVERSAMPLED = {"sync_over", "k1_over"}
# recipe -> (the model it starts from, its held-out metric: greedy accuracy, or the agent's success rate)
JOBS = {"gcpo_geometry": ("tiny-geometry", "eval/mean@1"), "grao_geometry": ("tiny-geometry", "eval/mean@1"),
        "salt_grid": ("tiny-grid", "eval/success")}


def start_server(model_path: str, log: Path, core: int) -> tuple[subprocess.Popen, str]:
    """`align serve` on one core (taskset, and vLLM's own OpenMP binding, which would take every core)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": str(core), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-m", "align", "serve", "--model", model_path,
                                 "--port", str(port), "--max-model-len", "512"], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    while "serving " not in log.read_text():
        if proc.poll() is not None:
            sys.exit(f"the server exited: {log.read_text()[-2000:]}")
        time.sleep(1)
    return proc, f"http://127.0.0.1:{port}"


def run(variant: str, seed: int, run_dir: Path, recipe: str, model_path: str, steps: int, eval_every: int,
        overrides: list[str], oversample: float) -> dict:
    started = time.time()
    if variant in OVERSAMPLED:
        overrides = [*overrides, f"loss.dynamic_sampling_oversample={oversample}"]
    if variant == "colocated":
        train(recipe, seed, run_dir, overrides, steps=steps, eval_every=eval_every, threads=2)
    else:
        proc, url = start_server(model_path, run_dir.parent / f"{run_dir.name}.serve.log", core=1)
        try:
            started = time.time()  # the server's start-up is not the run's
            extra = [*overrides, "rollout.engine=server", f"rollout.servers=[{url}]",
                     f"rollout.max_staleness={STALENESS[variant]}"]
            train(recipe, seed, run_dir, extra, steps=steps, eval_every=eval_every, threads=1, cores="0")
        finally:
            proc.terminate()
            proc.wait(60)
    wall = time.time() - started
    rows, evals = metric_rows(run_dir)
    metric = JOBS[recipe][1]
    evals = [r for r in evals if metric in r]
    curve = [(r["step"], r[metric]) for r in evals]
    times = [(r["step"], r["time"] - rows[0]["time"] + rows[0]["time/step"]) for r in evals]
    mean = lambda key: statistics.mean(r.get(key, 0.0) for r in rows)  # noqa: E731
    return {"wall_s": wall, "steps_per_hour": steps / wall * 3600, "final_accuracy": curve[-1][1], "curve": curve,
            "curve_wall_s": times, "trainer_wait_s": mean("time/trainer_wait"), "engine_idle_s": mean("time/engine_idle"),
            "step_s": mean("time/step"), "staleness_mean": mean("rollout/staleness_mean"),
            "generate_s": mean("time/generate"), "refill_rounds": mean("rollout/refill_rounds")}


def time_to_reach(run: dict, target: float) -> float | None:
    """The wall time of the first evaluation at or above `target` (None: never reached)."""
    return next((t for (_, acc), (_, t) in zip(run["curve"], run["curve_wall_s"]) if acc >= target), None)


def plot(results: dict, png: Path, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sync": "tab:blue", "k1": "tab:orange", "k2": "tab:green", "colocated": "tab:gray",
              "sync_over": "tab:purple", "k1_over": "tab:red"}
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, runs in results.items():
        for seed, r in runs.items():
            style = SEED_STYLES[int(seed) % len(SEED_STYLES)]
            by_step.plot(*zip(*r["curve"]), color=colors[name], linestyle=style, label=f"{name} seed {seed}")
            by_time.plot([t / 60 for _, t in r["curve_wall_s"]], [a for _, a in r["curve"]], color=colors[name], linestyle=style)
    by_step.set_xlabel("RL step")
    by_time.set_xlabel("wall time (min)")
    by_step.set_ylabel(ylabel)
    by_step.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=40)
    p.add_argument("--variants", nargs="+", default=["sync", "k1", "k2", "colocated"],
                   choices=[*STALENESS, "colocated"])
    p.add_argument("--recipe", choices=list(JOBS), default="gcpo_geometry")
    p.add_argument("--oversample", type=float, default=2.0,
                   help="loss.dynamic_sampling_oversample of the *_over variants")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every run, e.g. --set loss.dynamic_sampling=false (repeatable)")
    p.add_argument("--cache-dir", default="~/.cache/align")
    p.add_argument("--out", default=str(RESULTS / "async_vs_sync.json"))
    args = p.parse_args(argv)
    from align.demo import resolve_model_path

    model_path = resolve_model_path(JOBS[args.recipe][0], os.path.expanduser(args.cache_dir))
    work = Path(tempfile.mkdtemp(prefix="async_vs_sync-"))
    loads, results = [], {}
    for seed in args.seeds:
        for variant in args.variants:
            loads.append(os.getloadavg()[0])
            r = run(variant, seed, work / f"{variant}-{seed}", args.recipe, model_path, args.steps, args.eval_every, args.set,
                    args.oversample)
            results.setdefault(variant, {})[str(seed)] = r
            print(f"{variant} seed {seed}: {r['wall_s']:.0f} s, accuracy {r['final_accuracy']:.3f}", flush=True)
    sync_wall = statistics.mean(r["wall_s"] for r in results["sync"].values()) if "sync" in results else None
    print(f"load average before each run: {', '.join(f'{x:.2f}' for x in loads)}")
    print(f"| variant | wall min | x sync | steps/h | held-out {JOBS[args.recipe][1]} | reaches sync's final: x sync | step s | "
          "generate s/step | refill rounds/step | trainer waits s/step | engine idle s/step | staleness |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        m = {k: statistics.mean(r.get(k) or 0.0 for r in runs.values()) for k in next(iter(runs.values())) if "curve" not in k}
        ratio = f"{m['wall_s'] / sync_wall:.2f}" if sync_wall else "-"
        accs = "/".join(f"{r['final_accuracy']:.3f}" for r in runs.values())
        reach = "-"
        if "sync" in results:  # per seed: when this run first reached that seed's synchronous final accuracy
            ratios = []
            for seed, r in runs.items():
                sync = results["sync"].get(seed)
                if sync is None:  # no synchronous run of this seed to compare with
                    ratios.append("-")
                    continue
                t = time_to_reach(r, sync["final_accuracy"])
                ratios.append("never" if t is None else f"{t / sync['curve_wall_s'][-1][1]:.2f}")
            reach = "/".join(ratios)
        print(f"| {name} | {m['wall_s'] / 60:.1f} | {ratio} | {m['steps_per_hour']:.0f} | {accs} | {reach} | "
              f"{m['step_s']:.2f} | {m['generate_s']:.2f} | {m['refill_rounds']:.2f} | {m['trainer_wait_s']:.2f} | "
              f"{m['engine_idle_s']:.2f} | {m['staleness_mean']:.2f} |")
    payload = {"args": vars(args), "loadavg_before_runs": loads, "results": results}
    Path(args.out).write_text(json.dumps(payload, indent=1))
    plot(results, Path(args.out).with_suffix(".png"), f"held-out {JOBS[args.recipe][1]}")
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")
    return payload


if __name__ == "__main__":
    main()
