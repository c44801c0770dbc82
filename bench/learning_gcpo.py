"""Learning benchmark: GCPO vs the GRPO + unconditional-aux baseline on the built-in geometry task.

    .venv/bin/python bench/learning_gcpo.py --seeds 0 1 2 --minutes 10 --eval-every 40

`--algos grpo` adds plain GRPO (the baseline's recipe without its aux reward) as a third peer;
`--setting rare` runs all of them from `tiny-geometry-rare`, the warm start that rarely constructs
(GCPO's recipe there is recipes/gcpo_rare.yaml);
`--variant NAME=key=value,...` adds the first of --algos with those overrides (repeatable), e.g.
`--algos grpo --variant cispo=loss_type=cispo,epsilon_high=5` compares GRPO with CISPO.

Each (recipe, seed) trains from the same warm-started tiny model for a wall-clock budget, with a
held-out evaluation (512 problems, one sample each at temperature 1) at step 0 and every
`--eval-every` steps. Prints a table (held-out accuracy before -> after; aux usage on the families
where a construction helps and where it hurts) and writes bench/results/learning_gcpo.json and a
plot of the curves. Not part of the test run: it takes minutes per run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._runs import add_merge_option, add_variant_option, metric_rows, prepare, results_path, save, train, with_variants  # noqa: E402

RECIPES = {"gcpo": "gcpo_geometry", "grpo_aux": "grpo_geometry_aux", "grpo": "grpo_geometry_aux"}
# Plain GRPO: the baseline's recipe without its aux reward (accuracy and format only).
PLAIN_REWARDS = ["reward.functions=[geometry_accuracy,think_answer_format]", "reward.weights=[1.0,0.5]"]
OVERRIDES = {"grpo": PLAIN_REWARDS}
# --setting rare: GCPO's own recipe on the warm start that rarely constructs (recipes/gcpo_rare.yaml);
# the two GRPO peers are the same recipes as above on that model.
# Plain GRPO there also scores constructions at weight 0: trained exactly as PLAIN_REWARDS (the same
# curve, checked), but its aux use is logged, so the table shows whether it learns to construct.
RARE_MODEL = "model.name=tiny-geometry-rare"
SCORED_AUX = ["reward.functions=[geometry_accuracy,think_answer_format,aux_construction]", "reward.weights=[1.0,0.5,0.0]"]
SETTINGS = {
    "default": {name: (recipe, OVERRIDES.get(name, [])) for name, recipe in RECIPES.items()},
    "rare": {"gcpo": ("gcpo_rare", []), "grpo_aux": ("grpo_geometry_aux", [RARE_MODEL]),
             "grpo": ("grpo_geometry_aux", [RARE_MODEL, *SCORED_AUX])},
}
COLORS = {"gcpo": "tab:blue", "grpo_aux": "tab:orange", "grpo": "tab:gray"}


def summarize(run_dir: Path) -> dict:
    from align.data.geometry import FAMILIES

    train_rows, evals = metric_rows(run_dir)
    evals = [r for r in evals if "eval/mean@1" in r]
    helps = [f for f, fam in FAMILIES.items() if fam.aux_helps]
    hurts = [f for f in FAMILIES if f not in helps]

    def aux_rate(row: dict, families: list[str]) -> float | None:
        """None when the run did not score constructions (plain GRPO): unknown, not zero."""
        subset = f"eval/aux_helps/{'yes' if families == helps else 'no'}/aux_construction/rate"
        if subset in row:  # logged by the evaluation itself since issue 15
            return row[subset]
        rates = [row[f"eval/{f}/aux_construction/rate"] for f in families if f"eval/{f}/aux_construction/rate" in row]
        return sum(rates) / len(rates) if rates else None

    first, last = evals[0], evals[-1]
    # The last 20 trained batches' accuracy: training split, but of the groups dynamic sampling kept
    tail = [a for a in map(_accuracy, train_rows[-20:]) if a is not None]
    return {
        "steps": train_rows[-1]["step"] if train_rows else 0,
        "train_acc_last20": sum(tail) / len(tail) if tail else None,
        "train_seconds": sum(r.get("time/step", 0.0) for r in train_rows),
        "acc_before": first["eval/mean@1"],
        "acc_after": last["eval/mean@1"],
        "aux_helps_before": aux_rate(first, helps),
        "aux_helps_after": aux_rate(last, helps),
        "aux_hurts_before": aux_rate(first, hurts),
        "aux_hurts_after": aux_rate(last, hurts),
        "per_family_before": {f: {"acc": first.get(f"eval/{f}/mean@1"), "aux": first.get(f"eval/{f}/aux_construction/rate")}
                              for f in FAMILIES},
        "per_family_after": {f: {"acc": last.get(f"eval/{f}/mean@1"), "aux": last.get(f"eval/{f}/aux_construction/rate")}
                             for f in FAMILIES},
        "curve": [(r["step"], r["eval/mean@1"]) for r in evals],
    }


def _accuracy(row: dict) -> float | None:
    """A training step's accuracy: GCPO logs it under its component's name, GRPO under the function's."""
    return row.get("reward/accuracy/mean", row.get("reward/geometry_accuracy/mean"))


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=10.0, help="RL wall-clock budget per run")
    parser.add_argument("--steps", type=int, default=None,
                        help="a fixed number of RL steps instead of --minutes (fair when the machine is shared)")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--algos", nargs="+", default=["gcpo", "grpo_aux"], choices=list(RECIPES))
    parser.add_argument("--setting", default="default", choices=list(SETTINGS),
                        help="default: the main job's warm start; rare: the one that rarely constructs (gcpo_rare)")
    parser.add_argument("--out", default=None, help="default bench/results/learning_gcpo.json (_rare.json with --setting rare)")
    add_merge_option(parser)
    add_variant_option(parser)
    parser.add_argument("extra", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()
    args.out = args.out or results_path("learning_gcpo", args.setting)

    runs = {name: (recipe, list(overrides)) for name, (recipe, overrides) in SETTINGS[args.setting].items()}
    names = with_variants(args.algos, args.variant, runs)
    work, results = prepare(args.out, args.merge)
    started = time.time()
    for name in names:
        recipe, overrides = runs[name]
        for seed in args.seeds:
            run_dir = work / f"{name}-seed{seed}"
            train(recipe, seed, run_dir, [*overrides, *args.extra], steps=args.steps, minutes=None if args.steps else args.minutes,
                  eval_every=args.eval_every)
            results.setdefault(name, {})[str(seed)] = summarize(run_dir)

    print(f"{'run':<16}{'steps':>6}{'acc before':>12}{'acc after':>11}{'delta':>8}"
          f"{'aux helps':>16}{'aux hurts':>16}{'train acc':>11}")
    for name, runs in results.items():
        for seed, s in runs.items():
            print(f"{name + ' s' + seed:<16}{s['steps']:>6}{s['acc_before']:>12.3f}{s['acc_after']:>11.3f}"
                  f"{s['acc_after'] - s['acc_before']:>+8.3f}"
                  f"{_rate(s['aux_helps_before']):>8}->{_rate(s['aux_helps_after']):<6}"
                  f"{_rate(s['aux_hurts_before']):>8}->{_rate(s['aux_hurts_after']):<6}"
                  f"{_rate(s.get('train_acc_last20')):>11}")
    save(args.out, args, started, results, "held-out accuracy (mean@1)", COLORS)


if __name__ == "__main__":
    main()
