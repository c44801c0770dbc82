"""Peak memory of training steps with the LM head chunked (train.lm_head_chunk) and whole, same run.

Runs `recipe=grpo_smollm2` (SmolLM2-135M, a 49k vocabulary: the logits of a 4096-token micro-batch
are 0.8 GB in float32, and as much again for their gradient) a few steps each way and reports the
peak resident memory of the process tree during the steps (bench/soak.py's sampler).

    .venv/bin/python bench/lm_head_memory.py                     # 2 steps each, HF engine
    .venv/bin/python bench/lm_head_memory.py --steps 3 rollout.engine=vllm

Writes bench/results/lm_head_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from soak import soak

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--recipe", default="grpo_smollm2")
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 1024], help="train.lm_head_chunk values (0 = whole)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/align-lm-head-memory"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lm_head_memory.json")
    parser.add_argument("extra", nargs="*", help="more key=value overrides for every run")
    args = parser.parse_args(argv)
    overrides = ["rollout.engine=hf", "log.eval_every=0", "log.save_every=0", "log.report_to=[]", *args.extra]
    load = os.getloadavg()[0]
    peaks = {}
    for chunk in args.chunks:
        run_dir = args.workdir / f"chunk{chunk}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        per_step = soak(args.steps, run_dir, [*overrides, f"train.lm_head_chunk={chunk}"], recipe=args.recipe)
        peaks[chunk] = max(per_step.values())
    whole = peaks.get(0)
    result = {"recipe": args.recipe, "steps": args.steps, "overrides": overrides, "peak_rss_mib": peaks,
              "load_before": load, "load_after": os.getloadavg()[0]}
    print("| train.lm_head_chunk | peak RSS (MiB) | vs whole head |")
    print("|---|---|---|")
    for chunk, peak in peaks.items():
        print(f"| {chunk} | {peak:.0f} | {peak / whole:.2f}x |" if whole else f"| {chunk} | {peak:.0f} | |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"(load {load:.1f} -> {result['load_after']:.1f}; {args.out})")
    return result


if __name__ == "__main__":
    main()
