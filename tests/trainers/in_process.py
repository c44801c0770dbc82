"""A Trainer built in this process (one CPU rank, HF engine, tiny model) for tests that inspect it."""

from __future__ import annotations

from pathlib import Path

from tests.trainers.rewards_for_tests import __file__ as REWARDS_FILE

QUICK = ["recipe=grpo_math", f"reward.functions=[math_accuracy,{REWARDS_FILE}:digit_fraction]", "reward.weights=[1.0,1.0]",
         "train.batch_size=8", "rollout.num_generations=4", "rollout.max_tokens=12", "data.options.size=32",
         "log.report_to=[]", "log.console=false", "rollout.engine=hf", "log.eval_every=0"]


def make_trainer(cache_dir: str, run_dir: Path, *overrides: str):
    from accelerate.state import AcceleratorState, GradientState

    from align.algorithms import load_config
    from align.cli.train import build_algorithm, make_accelerator
    from align.training.loop import Trainer

    AcceleratorState._reset_state(True)  # each test gets a fresh accelerator (a process-wide singleton)
    GradientState._reset_state()
    cfg = load_config([*QUICK, f"model.cache_dir={cache_dir}", f"log.run_dir={run_dir}", *overrides])
    return Trainer(cfg, make_accelerator(cfg), build_algorithm(cfg), run_dir)
