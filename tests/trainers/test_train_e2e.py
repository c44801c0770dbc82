"""End to end through `accelerate launch align/train.py`, on the tiny default model (CPU, offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from align.telemetry.plots import read_metrics as read_jsonl

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
FIELDS = [
    "reward/mean", "reward/std", "reward/math_accuracy/mean", "reward/digit_fraction/mean", "zero_std_frac", "loss", "pg_loss", "kl",
    "clip_frac_low", "clip_frac_high", "entropy", "completion_len/mean", "truncated_frac", "sync/probe_diff",
    "sync/weight_version", "time/generate", "time/reward", "time/train", "time/sync", "tokens_per_s/generate",
    "grad_norm", "lr", "logp_mismatch",
]
DIGITS = ROOT / "tests" / "trainers" / "rewards_for_tests.py"
QUICK = ["recipe=grpo_math", f"reward.functions=[math_accuracy,{DIGITS}:digit_fraction]", "reward.weights=[1.0,1.0]", "train.batch_size=16", "rollout.num_generations=4", "rollout.max_tokens=16", "data.options.size=64",
         "log.report_to=[tensorboard]", "log.console=false", "rollout.engine=hf"]


def launch(cache_dir: str, *args: str, check: bool = True, launcher: bool = True) -> subprocess.CompletedProcess:
    """Run align/train.py under `accelerate launch` (or plain python, to read its own stderr)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    prefix = [ACCELERATE, "launch", "--num_processes", "1", "--cpu"] if launcher else [sys.executable]
    cmd = [*prefix, "align/train.py", *QUICK, f"model.cache_dir={cache_dir}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def read_metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "metrics.jsonl")  # null (a NaN logged) reads as NaN


def deterministic(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(("time", "tokens_per_s")) and k != "time"}


@pytest.fixture(scope="module")
def full_run(cache_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("full") / "run"
    launch(cache_dir, "train.steps=4", "log.save_every=2", f"log.run_dir={run_dir}")
    return run_dir


def test_grpo_run_writes_metrics_checkpoint_plot_and_export(full_run):
    rows = read_metrics(full_run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for name in FIELDS:
        assert name in rows[-1], f"metric {name} missing from metrics.jsonl"
    assert rows[-1]["sync/weight_version"] == 4  # one verified sync per step
    assert any(r["grad_norm"] > 0 for r in rows) and any(r["adv/abs_mean"] > 0 for r in rows)
    assert all(r["sync/probe_diff"] < 1e-3 for r in rows)
    assert (full_run / "metrics.png").stat().st_size > 0
    assert list((full_run / "tb").glob("events.out.tfevents*"))
    assert (full_run / "config.yaml").exists()
    assert (full_run / "checkpoints" / "step-000004" / "trainer_state.json").exists()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(full_run / "final") is not None


def test_resume_reproduces_the_uninterrupted_run(full_run, cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    launch(cache_dir, "train.steps=2", "log.save_every=2", f"log.run_dir={run_dir}")
    launch(cache_dir, "train.steps=4", "log.save_every=2", f"log.run_dir={run_dir}", "resume=latest")
    # the first half's config stays; the resumed half's is written beside it
    assert "steps: 2" in (run_dir / "config.yaml").read_text()
    assert ["steps: 4" in p.read_text() for p in run_dir.glob("config.resume-*.yaml")] == [True]
    full = {r["step"]: deterministic(r) for r in read_metrics(full_run)}
    resumed = {r["step"]: deterministic(r) for r in read_metrics(run_dir)}
    for step in (3, 4):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step


def test_lora_run(cache_dir, tmp_path):
    run_dir = tmp_path / "lora"
    launch(cache_dir, "train.steps=2", "lora.enabled=true", "lora.r=4", "train.lr=1e-3", f"log.run_dir={run_dir}")
    rows = read_metrics(run_dir)
    assert len(rows) == 2 and "loss" in rows[-1] and rows[-1]["sync/probe_diff"] < 1e-3
    assert (run_dir / "checkpoints" / "step-000002" / "adapter" / "adapter_config.json").exists()
    assert (run_dir / "final" / "config.json").exists()


def test_config_error_is_one_line_without_traceback(cache_dir):
    proc = launch(cache_dir, "train.stpes=3", check=False, launcher=False)
    assert proc.returncode != 0
    err_lines = [l for l in proc.stderr.splitlines() if l.startswith("align: error:")]
    assert err_lines == ["align: error: unknown config key 'train.stpes'; did you mean 'train.steps'?"]
    assert "Traceback" not in proc.stderr


def test_reward_function_error_names_the_function(cache_dir, tmp_path):
    bad = tmp_path / "bad_reward.py"
    bad.write_text("def broken(prompts, completions, **kw):\n    return [0.0] * (len(completions) - 1)\n")
    proc = launch(cache_dir, "train.steps=1", f"reward.functions=[{bad}:broken]", "reward.weights=null",
                  f"log.run_dir={tmp_path / 'r'}", check=False, launcher=False)
    assert proc.returncode != 0
    line = next(l for l in proc.stderr.splitlines() if l.startswith("align: error:"))
    assert "broken" in line and "Traceback" not in proc.stderr


def test_dapo_options_reference_model_and_several_updates(cache_dir, tmp_path):
    """KL to a reference model, mu=2 passes, dynamic sampling, overlong penalty, truncation masking."""
    run_dir = tmp_path / "opts"
    launch(cache_dir, "train.steps=2", "loss.beta=0.04", "train.updates_per_batch=2", "loss.dynamic_sampling=true",
           "loss.overlong_buffer=4", "loss.mask_truncated=true", "loss.eps_high=0.28", "loss.agg=token_mean",
           "train.lr=1e-3", f"log.run_dir={run_dir}")
    rows = read_metrics(run_dir)
    assert len(rows) == 2
    # With mu=2, the second pass sees a changed policy; the KL to the reference becomes non-zero.
    assert rows[-1]["kl"] > 0
    assert 0 <= rows[-1]["zero_std_frac"] <= 1


def test_vllm_run_exits_cleanly(cache_dir, tmp_path):
    """No traceback from vLLM's shutdown after a successful run (it used to print one at exit:
    accelerate destroyed the process group vLLM had created, then vLLM's exit hook destroyed it again)."""
    pytest.importorskip("vllm")
    proc = launch(cache_dir, "rollout.engine=vllm", "rollout.kv_cache_mb=64", "train.steps=1", "train.batch_size=4",
                  "rollout.num_generations=2", "rollout.max_tokens=4", "log.report_to=[]",
                  f"log.run_dir={tmp_path / 'run'}")
    assert (tmp_path / "run" / "final" / "config.json").exists()
    assert "Traceback" not in proc.stderr and "Invalid process group" not in proc.stderr, proc.stderr[-3000:]
