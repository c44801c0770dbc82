"""Learning benchmark: GRAO vs GRPO where the policy cannot solve some problems at the start.

    .venv/bin/python bench/learning_grao_unseen.py --seeds 0 1 2 --steps 60

Both start from `tiny-geometry-partial`, the warm start that never saw two of the eight geometry
families (align/demo/warm_start.py, UNSEEN_FAMILIES), and train on all eight for the same number of
steps, with a held-out evaluation (512 problems, one sample each at temperature 1) at step 0 and
every `--eval-every` steps:

- grao: recipe grao_unseen (the judge against the worked solution; the reference answer pooled
        into each group, so a group whose samples all fail imitates it; lr 5e-4)
- grpo: recipe grpo_geometry_aux on the same model with reward [geometry_accuracy,
        think_answer_format] (the rewards GRAO logs; a group whose samples all fail has advantage 0;
        lr 5e-5)

A trailing `train.lr=...` sets both algorithms' rate (the README's table has both at 5e-5 and at 5e-4).

GRAO's claim (arXiv 2508.07750, "imitate, explore, transcend"): imitation where the model's own
samples are worse than the reference. It shows on the unseen families: the table prints their
held-out accuracy beside the overall one. Writes bench/results/learning_grao_unseen.json and a plot.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from align.demo.warm_start import UNSEEN_FAMILIES  # noqa: E402
from bench._runs import add_merge_option, add_variant_option, prepare, save, train, with_variants  # noqa: E402
from bench.learning_gcpo import PLAIN_REWARDS as SCORED  # noqa: E402
from bench.learning_gcpo import summarize  # noqa: E402

MODEL = "model.name=tiny-geometry-partial"
RUNS = {"grao": ("grao_unseen", []), "grpo": ("grpo_geometry_aux", [MODEL, *SCORED])}
COLORS = {"grao": "tab:blue", "grpo": "tab:orange"}


def unseen_accuracy(per_family: dict) -> float:
    """Mean held-out accuracy over the families the warm start never saw (each family the same weight)."""
    return sum(per_family[f]["acc"] for f in UNSEEN_FAMILIES) / len(UNSEEN_FAMILIES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--algos", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "learning_grao_unseen.json"))
    add_merge_option(parser)
    add_variant_option(parser)
    parser.add_argument("extra", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()

    runs = {name: (recipe, list(extra)) for name, (recipe, extra) in RUNS.items()}
    names = with_variants(args.algos, args.variant, runs)
    work, results = prepare(args.out, args.merge)
    started = time.time()
    for seed in args.seeds:  # alternate algorithms within a seed: machine load hits them alike
        for name in names:
            recipe, extra = runs[name]
            run_dir = work / f"{name}-seed{seed}"
            train(recipe, seed, run_dir, [*extra, *args.extra], steps=args.steps, eval_every=args.eval_every)
            summary = summarize(run_dir)
            summary["unseen_before"] = unseen_accuracy(summary["per_family_before"])
            summary["unseen_after"] = unseen_accuracy(summary["per_family_after"])
            results.setdefault(name, {})[str(seed)] = summary

    print(f"{'run':<12}{'steps':>6}{'acc before':>12}{'acc after':>11}{'delta':>8}{'unseen before':>15}{'unseen after':>14}"
          f"{'train s':>9}")
    for name, per_seed in results.items():
        for seed, s in per_seed.items():
            print(f"{name + ' s' + seed:<12}{s['steps']:>6}{s['acc_before']:>12.3f}{s['acc_after']:>11.3f}"
                  f"{s['acc_after'] - s['acc_before']:>+8.3f}{s['unseen_before']:>15.3f}{s['unseen_after']:>14.3f}"
                  f"{s['train_seconds']:>9.0f}")
    save(args.out, args, started, results, "held-out accuracy (mean@1)", COLORS)


if __name__ == "__main__":
    main()
