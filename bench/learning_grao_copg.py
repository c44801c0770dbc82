"""Learning benchmark: GRAO vs GRPO and CoPG (online, offline) vs GRPO on the built-in geometry task.

    .venv/bin/python bench/learning_grao_copg.py --seeds 0 1 2 --steps 60

Every run starts from the same warm-started tiny model (tiny-geometry) and trains for the same
number of steps, with a held-out evaluation (512 problems, one sample each at temperature 1) at
step 0 and every `--eval-every` steps:

- grpo:         recipe grpo_geometry_aux with reward [geometry_accuracy, think_answer_format] (the
                baseline: the same rewards CoPG uses, no aux term)
- grao:         recipe grao_geometry (judge against the worked solution, imitation of it)
- copg:         recipe copg_geometry (online, G = 8 samples per prompt)
- copg_offline: recipe copg_offline on a fixed file sampled ONCE from the warm start with
                `python -m align sample` (--offline-prompts prompts x 8, scored like grpo); no
                generation during training

Prints held-out accuracy before -> after per run, writes bench/results/learning_grao_copg.json
and a plot. Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._runs import add_merge_option, add_variant_option, prepare, save, train, with_variants  # noqa: E402
from bench.learning_gcpo import PLAIN_REWARDS as SCORED  # noqa: E402
from bench.learning_gcpo import summarize  # noqa: E402
RUNS = {
    "grpo": ("grpo_geometry_aux", SCORED),
    "grao": ("grao_geometry", []),
    "copg": ("copg_geometry", []),
    "copg_offline": ("copg_offline", []),
}
COLORS = {"grpo": "tab:orange", "grao": "tab:blue", "copg": "tab:green", "copg_offline": "tab:red"}


def offline_rows(path: Path, prompts: int, extra: list[str]) -> Path:
    """Sample the offline rows from the current warm start, once per benchmark run: a file left by
    an earlier run may come from an earlier warm start (it did: version 3 rows under version 4)."""
    path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "align", "sample", "recipe=grpo_geometry_aux", *SCORED, *extra, "--out", str(path),
           "--prompts", str(prompts)]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--algos", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--offline-prompts", type=int, default=512)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "learning_grao_copg.json"))
    add_merge_option(parser)
    add_variant_option(parser)
    parser.add_argument("extra", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()

    runs = {name: (recipe, list(extra)) for name, (recipe, extra) in RUNS.items()}
    names = with_variants(args.algos, args.variant, runs)
    if args.variant and args.algos[0] == "copg_offline":
        raise SystemExit("--variant: put an online algorithm first in --algos (copg_offline's data is made per run)")
    work, results = prepare(args.out, args.merge)
    started = time.time()
    rows = offline_rows(work / "rows.jsonl", args.offline_prompts, args.extra) if "copg_offline" in args.algos else None
    for seed in args.seeds:  # alternate algorithms within a seed: machine load hits them alike
        for name in names:
            recipe, extra = runs[name]
            overrides = args.extra
            if name == "copg_offline":  # the rows file is the training data: task options do not apply to it
                extra = [f"data.source={rows}"]
                overrides = [o for o in args.extra if not o.startswith(("data.options", "rollout.num_generations", "train.batch_size"))]
            run_dir = work / f"{name}-seed{seed}"
            train(recipe, seed, run_dir, [*extra, *overrides], steps=args.steps, eval_every=args.eval_every)
            results.setdefault(name, {})[str(seed)] = summarize(run_dir)

    print(f"{'run':<20}{'steps':>6}{'acc before':>12}{'acc after':>11}{'delta':>8}{'train s':>9}")
    for name, runs in results.items():
        for seed, s in runs.items():
            print(f"{name + ' s' + seed:<20}{s['steps']:>6}{s['acc_before']:>12.3f}{s['acc_after']:>11.3f}"
                  f"{s['acc_after'] - s['acc_before']:>+8.3f}{s['train_seconds']:>9.0f}")
    save(args.out, args, started, results, "held-out accuracy (mean@1)", COLORS)


if __name__ == "__main__":
    main()
