"""The reward phase's share of a training step with a reward model (`rm:`), batched vs one forward per sample.

    .venv/bin/python bench/reward_phase.py                               # policy qwen2-40m, tiny RM
    .venv/bin/python bench/reward_phase.py --policy smollm2-135m-instruct --rounds 2

Each measurement is a short GRPO run (`align/train.py`, one process, fresh) whose only reward is the
reward model; metrics.jsonl gives time/reward and time/step per step (step 1, the warm-up, is left
out). Two variants alternate over `--rounds` rounds so background load hits them alike:
  batched      reward.options batch_tokens=8192 (the default): the whole rank's batch in few forwards
  per_sample   batch_tokens=1: one forward per completion (what batching saves)
The reward model is the tiny sequence classifier built in code (align.models.tiny.write_tiny_reward_model,
preset --rm-preset). Prints a table and writes bench/results/reward_phase.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VARIANTS = {"batched": 8192, "per_sample": 1}


def run_once(args, rm_path: str, variant: str, run_dir: Path) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)  # metrics.jsonl is appended to: start clean
    spec = f"rm:{rm_path}"
    options = {spec: {"batch_tokens": VARIANTS[variant]}}
    cmd = [sys.executable, "align/train.py", "recipe=grpo_math", f"model.name={args.policy}",
           f"model.cache_dir={args.cache_dir}", f"reward.functions=[{spec}]", "reward.weights=[1.0]",
           f"reward.options={json.dumps(options)}", f"train.steps={args.steps}", f"train.batch_size={args.batch_size}",
           f"rollout.num_generations={args.generations}", f"rollout.max_tokens={args.max_tokens}",
           f"rollout.engine={args.engine}", "log.report_to=[]", "log.console=false", "log.eval_every=0",
           f"log.run_dir={run_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    from align.telemetry.plots import read_metrics  # the repository root is on sys.path by now

    rows = read_metrics(run_dir / "metrics.jsonl")  # null (a NaN logged) reads as NaN
    rows = [r for r in rows if r.get("step", 0) > 1 and "time/reward" in r]
    reward = sum(r["time/reward"] for r in rows)
    step = sum(r["time/step"] for r in rows)
    return {"variant": variant, "steps": len(rows), "reward_s_per_step": reward / len(rows),
            "step_s": step / len(rows), "reward_share": reward / step,
            "forwards_per_step": statistics.mean(r[f"reward/rm:{Path(rm_path).name}/batches"] for r in rows),
            "generate_s_per_step": statistics.mean(r["time/generate"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="qwen2-40m")
    parser.add_argument("--rm-preset", default="tiny")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache-dir", default="~/.cache/align")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "reward_phase.json"))
    args = parser.parse_args()

    from align.models.tiny import spec_hash, write_tiny_reward_model

    rm_dir = Path(args.cache_dir).expanduser() / "models" / f"rm-{args.rm_preset}-seed0-{spec_hash(args.rm_preset, 0)}"
    if not (rm_dir / "config.json").exists():
        write_tiny_reward_model(rm_dir, args.rm_preset, seed=0)
    base = ROOT / "bench" / "results" / "reward_phase_runs"
    results = []
    for round_ in range(args.rounds):
        for variant in VARIANTS:  # A B A B: the variants share the machine's load
            result = run_once(args, str(rm_dir), variant, base / f"{variant}-{round_}")
            results.append({"round": round_, **result})
            print(f"round {round_} {variant:10s} reward {result['reward_s_per_step']:.3f} s/step of {result['step_s']:.2f} "
                  f"({100 * result['reward_share']:.1f}%), {result['forwards_per_step']:.0f} forwards/step", flush=True)
    summary = {}
    for variant in VARIANTS:
        mine = [r for r in results if r["variant"] == variant]
        summary[variant] = {k: statistics.mean(r[k] for r in mine)
                            for k in ("reward_s_per_step", "step_s", "reward_share", "forwards_per_step")}
    print(f"\n{'variant':12s} {'reward s/step':>14s} {'step s':>8s} {'reward share':>13s} {'forwards/step':>14s}")
    for variant, s in summary.items():
        print(f"{variant:12s} {s['reward_s_per_step']:14.3f} {s['step_s']:8.2f} {100 * s['reward_share']:12.1f}% "
              f"{s['forwards_per_step']:14.0f}")
    speedup = summary["per_sample"]["reward_s_per_step"] / summary["batched"]["reward_s_per_step"]
    print(f"batched reward phase is {speedup:.1f}x faster than one forward per sample")
    load = os.getloadavg()
    out = {"policy": args.policy, "rm_preset": args.rm_preset, "settings": vars(args), "results": results,
           "summary": summary, "batched_speedup": speedup, "loadavg_1_5_15": load,
           "machine": f"{platform.machine()} {os.cpu_count()} cpus"}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
