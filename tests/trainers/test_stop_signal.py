"""SIGTERM (a cluster's notice before preemption) and SIGINT (Ctrl-C): the run saves a checkpoint
after the step in progress, says in one line how to continue, exits with the signal's status, and
`resume=latest` then trains the same later steps as a run that was never stopped (CPU, tiny model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from align.training.checkpoint import find_checkpoint
from tests.trainers.test_train_e2e import QUICK, ROOT, deterministic, read_metrics

STEPS = ["train.steps=6", "log.save_every=0", "log.keep_last=0", "log.report_to=[]"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def command(cache_dir: str, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "align/train.py", *QUICK, f"model.cache_dir={cache_dir}", f"log.run_dir={run_dir}", *STEPS, *extra]


def stopped_run(cache_dir: str, run_dir: Path, signum: int) -> tuple[subprocess.CompletedProcess, int]:
    """Start a run, send `signum` once its first step is logged; (the finished process, steps logged by then)."""
    proc = subprocess.Popen(command(cache_dir, run_dir), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + 600
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run never logged a step"
        time.sleep(0.1)
    logged = len(metrics.read_text().splitlines())
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), logged


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_after_the_step_and_says_how_to_continue(signum, cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc, logged = stopped_run(cache_dir, run_dir, signum)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    step = len(read_metrics(run_dir))
    assert step >= logged and step < 6  # the step in progress finished; no later one started
    assert last.startswith(f"align: stopped by {signal.Signals(signum).name} after step {step}, checkpoint saved"), last
    assert last.endswith("run the same command with resume=latest to continue")
    assert "Traceback" not in proc.stderr
    assert find_checkpoint(run_dir, "latest").name == f"step-{step:06d}"
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # no half-written save


def test_resume_after_sigterm_trains_what_an_uninterrupted_run_trains(cache_dir, tmp_path):
    reference = tmp_path / "reference"
    done = subprocess.run(command(cache_dir, reference), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    stopped = tmp_path / "stopped"
    proc, _ = stopped_run(cache_dir, stopped, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    step = len(read_metrics(stopped))
    resumed = subprocess.run(command(cache_dir, stopped, "resume=latest"), cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = {r["step"]: deterministic(r) for r in read_metrics(reference)}
    after = {r["step"]: deterministic(r) for r in read_metrics(stopped)}  # later lines win: the resumed steps
    assert sorted(after) == list(range(1, 7))
    for s in range(step + 1, 7):
        assert after[s] == pytest.approx(expected[s], rel=1e-5, abs=1e-6), s
