"""As a TRL or verl user would run it: their data, their reward functions, their key names, 2 steps each.

Plain `python align/train.py` (a single process, as `accelerate launch --num_processes 1` gives) on
the tiny model, offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from align.telemetry.plots import read_metrics
from tests.foreign.verl_data import write_verl_parquet

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["rollout.engine=hf", "log.console=false", "log.report_to=[]", "log.sample_every=1", "log.num_samples=2"]


def train(cache_dir: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "align/train.py", f"model.cache_dir={cache_dir}", *SMALL, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def metrics(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir / "metrics.jsonl")  # null (a NaN logged) reads as NaN


@pytest.fixture(scope="module")
def verl_run(cache_dir, tmp_path_factory):
    data = write_verl_parquet(tmp_path_factory.mktemp("verl") / "gsm8k")
    run_dir = tmp_path_factory.mktemp("verl_run") / "run"
    argv = [f"data.source={data}", "data.answer_column=reward_model.ground_truth",
            f"reward.functions=[verl:{data.parent / 'gsm8k_reward.py'}:compute_score,math_accuracy]",
            "actor_rollout_ref.rollout.n=4", "train.batch_size=8",
            "actor_rollout_ref.actor.optim.lr=1e-4", "actor_rollout_ref.actor.loss_agg_mode=token-mean",
            "actor_rollout_ref.actor.kl_loss_type=low_var_kl", "trainer.total_training_steps=2",
            "rollout.max_tokens=8", f"log.run_dir={run_dir}", "log.save_every=2"]
    return run_dir, argv, train(cache_dir, *argv)


def test_verl_parquet_with_nested_answer_and_verl_reward_trains(verl_run):
    run_dir, _, proc = verl_run
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    # 1.0 only if every completion's compute_score got its own row's data_source, ground truth and extra_info
    assert all(r["reward/compute_score/mean"] == 1.0 for r in rows)
    assert all("reward/math_accuracy/mean" in r for r in rows)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (cfg["rollout"]["num_generations"], cfg["loss"]["agg"], cfg["loss"]["kl_kind"], cfg["train"]["steps"]) == (4, "token_mean", "k3", 2)
    assert cfg["log"]["run_dir"] == str(run_dir)  # the resolved folder, not null
    assert proc.stdout.count(f"run folder: {run_dir}") == 2  # at the start and at the end
    assert "'actor_rollout_ref.rollout.n' is rollout.num_generations=4 here" in proc.stderr
    # samples: the templated prompt and the whole group, each with reward and advantage
    sample = json.loads((run_dir / "samples.jsonl").read_text().splitlines()[0])
    assert "Answer after ####." in sample["prompt"] and sample["answer"] in {"72", "42", "27", "99", "15", "36", "10", "7"}
    assert len(sample["completions"]) == 4
    assert all({"text", "reward", "advantage", "rewards"} <= set(c) for c in sample["completions"])
    assert sample["completions"][0]["rewards"]["compute_score"] == 1.0


def test_resume_refuses_a_changed_reward_and_overwrites_nothing(verl_run, cache_dir):
    run_dir, argv, _ = verl_run
    before = (run_dir / "config.yaml").read_text()
    changed = [a if not a.startswith("reward.functions=") else "reward.functions=[math_accuracy]" for a in argv]
    proc = train(cache_dir, *changed, "resume=latest", "trainer.total_training_steps=3", check=False)
    assert proc.returncode == 2
    line = [l for l in proc.stderr.splitlines() if l.startswith("align: error:")]
    assert len(line) == 1 and "reward.functions" in line[0] and "resume_force=true" in line[0], proc.stderr[-2000:]
    assert "train.steps" not in line[0]  # running longer is not a change
    assert (run_dir / "config.yaml").read_text() == before and [r["step"] for r in metrics(run_dir)] == [1, 2]


def test_trl_quickstart_with_its_own_rewards_and_names(cache_dir, tmp_path):
    # TRL's GRPO quickstart trains on chat prompts with a `solution` column and trl.rewards.accuracy_reward.
    data = tmp_path / "deepmath_like.jsonl"
    problems = [(f"What is {a} + {b}?", f"${a + b}$") for a in range(1, 9) for b in range(1, 9)]
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}], "solution": s}) + "\n" for q, s in problems))
    run_dir = tmp_path / "run"
    proc = train(cache_dir, f"data.source={data}",
                 # the format reward listed first: evaluation must still score accuracy_reward as accuracy
                 "reward_funcs=[trl.rewards:think_format_reward,trl.rewards:accuracy_reward]",
                 "learning_rate=1e-4", "num_generations=4", "max_completion_length=8", "loss_type=dapo",
                 "scale_rewards=group", "beta=0.0", "num_iterations=1", "max_steps=2", "train.batch_size=8",
                 "eval_steps=2", "eval.holdout=4", f"output_dir={run_dir}")
    rows = metrics(run_dir)
    assert {"reward/accuracy_reward/mean", "reward/think_format_reward/mean"} <= set(rows[1])
    evals = [r for r in rows if "eval/mean@1" in r]
    assert [r["step"] for r in evals] == [0, 2]
    assert "eval/think_format_reward/rate" in evals[-1] and "eval/accuracy_reward/rate" not in evals[-1]
    assert "held out for evaluation" in proc.stdout + proc.stderr  # single file: no test split
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (cfg["train"]["lr"], cfg["rollout"]["max_tokens"], cfg["loss"]["agg"], cfg["loss"]["scale"]) == (1e-4, 8, "token_mean", "std")
    for said in ("'learning_rate' is train.lr=1e-4 here", "'loss_type' is loss.surrogate=clip loss.agg=token_mean here"):
        assert proc.stderr.count(said) == 1, said
