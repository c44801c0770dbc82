"""A few SALT steps on agent episodes end to end through `accelerate launch align/train.py`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.trainers.test_train_e2e import ACCELERATE, read_metrics

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "tests" / "envs" / "envs_for_tests.py"


def test_salt_run_on_a_user_environment_logs_graph_metrics_and_held_out_success(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    # The untrained tiny model in a user environment loaded from a file (the grid needs a warm start).
    cmd = [ACCELERATE, "launch", "--num_processes", "1", "--cpu", "align/train.py", "recipe=salt_grid",
           "model.name=tiny", f"model.cache_dir={cache_dir}", f"env.name={ECHO}:Echo", "env.max_turns=3",
           "rollout.engine=hf", "rollout.num_generations=4", "train.batch_size=8", "train.steps=2", "log.eval_every=2",
           "env.eval_tasks=2", "log.report_to=[]", "log.console=false", f"log.run_dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(run_dir)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for name in ("salt/nodes_per_group", "salt/edges_per_group", "salt/merged_steps_per_group", "salt/sign_flip_frac",
                 "episode/turns_mean", "episode/unfinished_frac", "sync/probe_diff"):
        assert name in steps[-1], name
    # Echo's states are the turn number, shared by the group: the first node is always merged.
    assert all(r["salt/nodes_per_group"] <= r["salt/edges_per_group"] for r in steps)
    assert all(r["episode/turns_mean"] == 2 for r in steps)  # Echo ends after 2 actions (max_turns 3)
    assert any(r["grad_norm"] > 0 for r in steps)
    evals = [r for r in rows if "eval/success" in r]
    assert [r["step"] for r in evals] == [0, 2] and 0 <= evals[-1]["eval/success"] <= 1
