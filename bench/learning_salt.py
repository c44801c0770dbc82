"""Learning benchmark: SALT vs GRPO on the built-in grid environment, at equal steps.

    .venv/bin/python bench/learning_salt.py --seeds 0 1 2 --steps 40

Each (algorithm, seed) trains the warm-started tiny model (`tiny-grid`) with recipe salt_grid or
grpo_grid, the same environment, sampling, optimiser and number of steps; the only difference is
the advantage each action gets (SALT: its trajectory-graph edge's; GRPO: its episode's). Held-out
success (`env.eval_tasks` test tasks, one sampled episode each) is measured at step 0 and every
`--eval-every` steps. Prints a table (success before -> after, SALT minus GRPO per seed, graph
size, sign-flip share) and writes bench/results/learning_salt.json and a plot. Runs are
interleaved (SALT, GRPO, SALT, GRPO ...) so that machine load hits both alike. Not part of the
test run: minutes per run. `--minutes` caps each run's wall clock (then steps may differ: say so).
`--setting large` runs the 6x6 room with 8 moves (salt_grid_large / grpo_grid_large), where more
edges are shared; `--variant salt_rloo=salt.base=rloo` adds SALT on RLOO's baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._runs import add_merge_option, add_variant_option, metric_rows, prepare, results_path, save, train, with_variants  # noqa: E402

RECIPES = {"salt": "salt_grid", "grpo": "grpo_grid"}
# --setting large: the 6x6 room with 8 moves (recipes/salt_grid_large.yaml, grpo_grid_large.yaml)
SETTINGS = {"default": RECIPES, "large": {"salt": "salt_grid_large", "grpo": "grpo_grid_large"}}
COLORS = {"salt": "tab:blue", "grpo": "tab:orange"}


def summarize(run_dir: Path) -> dict:
    train_rows, evals = metric_rows(run_dir)
    evals = [r for r in evals if "eval/success" in r]
    mean = lambda key: sum(r.get(key, 0.0) for r in train_rows) / max(len(train_rows), 1)  # noqa: E731
    return {
        "steps": train_rows[-1]["step"] if train_rows else 0,
        "train_seconds": sum(r.get("time/step", 0.0) for r in train_rows),
        "success_before": evals[0]["eval/success"],
        "success_after": evals[-1]["eval/success"],
        "train_success_first": train_rows[0]["episode/success"] if train_rows else None,
        "train_success_last": train_rows[-1]["episode/success"] if train_rows else None,
        "edges_per_group": mean("salt/edges_per_group"),
        "merged_step_frac": mean("salt/merged_step_frac"),
        "sign_flip_frac": mean("salt/sign_flip_frac"),
        "curve": [(r["step"], r["eval/success"]) for r in evals],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40, help="RL steps per run (equal for both algorithms)")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock cap per run (0 = none)")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--algos", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--setting", default="default", choices=list(SETTINGS),
                        help="default: the 4x4 room (salt_grid); large: 6x6 with 8 moves (salt_grid_large)")
    parser.add_argument("--out", default=None, help="default bench/results/learning_salt.json (_large.json with --setting large)")
    add_merge_option(parser)
    add_variant_option(parser)
    parser.add_argument("extra", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()
    args.out = args.out or results_path("learning_salt", args.setting)

    runs = {name: (recipe, []) for name, recipe in SETTINGS[args.setting].items()}
    names = with_variants(args.algos, args.variant, runs)
    work, results = prepare(args.out, args.merge)
    started = time.time()
    for seed in args.seeds:
        for name in names:  # interleaved: load on a shared machine hits both algorithms alike
            recipe, overrides = runs[name]
            run_dir = work / f"{name}-seed{seed}"
            train(recipe, seed, run_dir, [*overrides, *args.extra], steps=args.steps, minutes=args.minutes or None,
                  eval_every=args.eval_every)
            results.setdefault(name, {})[str(seed)] = summarize(run_dir)

    print(f"{'run':<12}{'steps':>6}{'success before':>16}{'after':>8}{'delta':>8}{'edges/group':>13}{'flips':>8}")
    for name, runs in results.items():
        for seed, s in runs.items():
            print(f"{name + ' s' + seed:<12}{s['steps']:>6}{s['success_before']:>16.3f}{s['success_after']:>8.3f}"
                  f"{s['success_after'] - s['success_before']:>+8.3f}{s['edges_per_group']:>13.1f}{s['sign_flip_frac']:>8.3f}")
    if {"salt", "grpo"} <= set(results):
        for seed in results["salt"]:
            if seed in results["grpo"]:
                gap = results["salt"][seed]["success_after"] - results["grpo"][seed]["success_after"]
                print(f"seed {seed}: SALT - GRPO held-out success after = {gap:+.3f}")
    save(args.out, args, started, results, "held-out success", COLORS)


if __name__ == "__main__":
    main()
