"""A few SALT steps on agent episodes end to end through `accelerate launch align/train.py`."""

from __future__ import annotations

from pathlib import Path

from tests.trainers.test_train_e2e import launch, read_metrics

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "tests" / "envs" / "envs_for_tests.py"


def test_salt_run_on_a_user_environment_logs_graph_metrics_and_held_out_success(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    # QUICK's GRPO-math keys are overridden by the agent recipe's; the environment is a user file.
    launch(cache_dir, "recipe=salt_grid", "model.name=tiny", f"env.name={ECHO}:Echo", "env.max_turns=3",
           "rollout.num_generations=4", "train.batch_size=8", "train.steps=3", "log.eval_every=3", "env.eval_tasks=2",
           "log.tensorboard=false", f"log.run_dir={run_dir}")
    rows = read_metrics(run_dir)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for name in ("salt/nodes_per_group", "salt/edges_per_group", "salt/merged_steps_per_group", "salt/sign_flip_frac",
                 "episode/turns_mean", "episode/unfinished_frac", "sync/probe_diff"):
        assert name in steps[-1], name
    # Echo's states are the turn number, shared by the group: the first node is always merged.
    assert all(r["salt/nodes_per_group"] <= r["salt/edges_per_group"] for r in steps)
    assert all(r["episode/turns_mean"] == 2 for r in steps)  # Echo ends after 2 actions (max_turns 3)
    assert any(r["grad_norm"] > 0 for r in steps)
    evals = [r for r in rows if "eval/success" in r]
    assert [r["step"] for r in evals] == [0, 3] and 0 <= evals[-1]["eval/success"] <= 1
