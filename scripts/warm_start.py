"""Build (or reuse) the geometry warm start of the tiny model and report its sampled accuracy.

    .venv/bin/python scripts/warm_start.py --cache-dir ~/.cache/align --seed 0 --eval 512 --samples 4 --forced
    .venv/bin/python scripts/warm_start.py --aux-fraction 0.08 --eval 512 --samples 4 --forced   # tiny-geometry-rare

Prints the build time and, per family, accuracy, aux usage, accuracy with / without aux and pass@k
on problems sampled at temperature 1.0, from RL's 'train' split by default (choose a warm-start
recipe there, never on the held-out 'test' split); --forced adds the accuracy with each route
forced (the room style choice leaves RL); --json writes the report to a file.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from align.data.geometry import FAMILIES, generate_geometry_rows
from align.models import load_model, load_tokenizer
from align.models.loading import DEFAULT_CACHE_DIR
from align.demo.warm_start import WarmStartConfig, build_geometry_warm_start, geometry_style_report, sample_geometry_completions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=WarmStartConfig.steps)
    parser.add_argument("--aux-fraction", type=float, default=WarmStartConfig.aux_fraction,
                        help="share of solutions written with a construction (tiny-geometry-rare: RARE_AUX_FRACTION)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if a cached build exists")
    parser.add_argument("--eval", type=int, default=400, help="held-out problems to sample (0: no evaluation)")
    parser.add_argument("--samples", type=int, default=4, help="completions per problem (pass@k uses all of them)")
    parser.add_argument("--split", default="train", choices=["train", "test"],
                        help="problems to sample: RL's prompts (default) or the held-out ones")
    parser.add_argument("--forced", action="store_true", help="also sample with the aux and the direct route forced")
    parser.add_argument("--json", default=None, help="write the report to this file")
    args = parser.parse_args()

    start = time.perf_counter()
    path = build_geometry_warm_start(args.cache_dir, seed=args.seed, steps=args.steps, overwrite=args.overwrite,
                                     aux_fraction=args.aux_fraction)
    print(f"warm start at {path} ({time.perf_counter() - start:.1f} s)")
    if args.eval <= 0:
        return
    model, tokenizer = load_model(str(path)), load_tokenizer(str(path))
    rows = generate_geometry_rows(args.split, args.eval, seed=args.seed + 1)
    start = time.perf_counter()
    completions = sample_geometry_completions(model, tokenizer, rows, samples_per_prompt=args.samples, seed=args.seed)
    print(f"sampled {args.eval} x {args.samples} completions in {time.perf_counter() - start:.1f} s")
    report = geometry_style_report(rows, completions)
    print(f"{'family':20s} helps  acc   aux_rate  acc|aux  acc|no-aux  pass@{args.samples}")
    for name, stats in report.items():
        helps = {True: "yes", False: "no"}.get(FAMILIES[name].aux_helps if name in FAMILIES else None, "")
        print(f"{name:20s} {helps:5s} {stats['accuracy']:.3f}  {stats['aux_rate']:.3f}     {stats['acc_with_aux']:.3f}    "
              f"{stats['acc_without_aux']:.3f}       {stats['pass_at_k']:.3f}")
    forced = {}
    if args.forced:
        for style in ("aux", "direct"):
            sampled = sample_geometry_completions(model, tokenizer, rows, samples_per_prompt=args.samples,
                                                  seed=args.seed, style=style)
            forced[style] = {name: stats["accuracy"] for name, stats in geometry_style_report(rows, sampled).items()}
        print(f"{'family':20s} acc|aux forced  acc|direct forced")
        for name in report:
            print(f"{name:20s} {forced['aux'][name]:.3f}          {forced['direct'][name]:.3f}")
        headroom = sum(max(forced["aux"][n], forced["direct"][n]) - report[n]["accuracy"] for n in FAMILIES) / len(FAMILIES)
        print(f"choosing the better route per family would add {headroom:+.3f} accuracy")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": str(path), "split": args.split, "samples": args.samples, "report": report,
                       "forced": forced}, handle, indent=2)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
