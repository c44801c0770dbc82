"""SIGKILL in the middle of a checkpoint write, then resume=latest: the run continues from the last COMPLETE
checkpoint and its later metrics equal those of a run that was never interrupted (CPU, tiny model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from align.training.checkpoint import find_checkpoint
from tests.trainers.test_train_e2e import QUICK, ROOT, deterministic, read_metrics

pytestmark = pytest.mark.slow  # three training launches: ~2-4 minutes on 2 cores

ARGS = ["train.steps=4", "log.save_every=1", "log.keep_last=0", "log.report_to=[]"]


def command(cache_dir: str, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "align/train.py", *QUICK, f"model.cache_dir={cache_dir}", f"log.run_dir={run_dir}", *ARGS, *extra]


def run(cache_dir: str, run_dir: Path, *extra: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command(cache_dir, run_dir, *extra), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_sigkill_during_a_checkpoint_write_then_resume_matches_the_uninterrupted_run(cache_dir, tmp_path):
    reference = tmp_path / "reference"
    run(cache_dir, reference)

    crashed = tmp_path / "crashed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ALIGN_TEST_PAUSE_IN_SAVE_AT_STEP": "3"}
    # Its own session: the kill takes the trainer and its reward workers down at once, as a node failure would.
    proc = subprocess.Popen(command(cache_dir, crashed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    partial = crashed / "checkpoints" / ".tmp-step-000003"
    deadline = time.monotonic() + 600
    while not (partial / "model.safetensors").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-4000:]
        assert time.monotonic() < deadline, "the run never reached its third checkpoint"
        time.sleep(0.2)
    time.sleep(0.5)  # inside the save: weights, optimizer and RNG written, not yet marked complete
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # The interrupted save is not a checkpoint; the one before it is.
    assert partial.is_dir() and not (partial / "trainer_state.json").exists()
    assert find_checkpoint(crashed, "latest").name == "step-000002"

    run(cache_dir, crashed, "resume=latest")
    assert find_checkpoint(crashed, "latest").name == "step-000004"
    assert not partial.exists()  # the leftover was replaced by the real step-3 save
    expected = {r["step"]: deterministic(r) for r in read_metrics(reference)}
    resumed = {r["step"]: deterministic(r) for r in read_metrics(crashed)}  # later lines win: steps 3-4 of the resume
    for step in (3, 4):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
        # Not vacuous: the steps after the resume learn (rewards with spread, non-zero advantages and gradients).
        assert expected[step]["reward/std"] > 0 and expected[step]["adv/abs_mean"] > 0 and expected[step]["grad_norm"] > 0

    # The weights after the next steps are the uninterrupted run's, and those steps moved them.
    from safetensors.torch import load_file

    final, want = load_file(crashed / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    at_resume = load_file(crashed / "checkpoints" / "step-000002" / "model.safetensors")
    assert sorted(final) == sorted(want)
    moved = 0.0
    for name, tensor in want.items():
        torch.testing.assert_close(final[name], tensor, rtol=0, atol=1e-6, msg=name)
        moved = max(moved, (tensor - at_resume[name]).abs().max().item())
    assert moved > 1e-5, "steps 3-4 left the weights where the step-2 checkpoint had them"
