"""The README's main command, at a reduced step count: GCPO on the geometry task, tiny-geometry model.

Uses the default model cache (~/.cache/align): the warm start of `tiny-geometry` is built there
once (minutes on 2 cores) and reused by the README command and the learning benchmark.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from align.telemetry.plots import read_metrics

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")


def test_readme_main_command_runs_gcpo_and_logs_consistent_mask_metrics(tmp_path):
    run_dir = tmp_path / "gcpo"
    cmd = [ACCELERATE, "launch", "--num_processes", "1", "--cpu", "align/train.py", "recipe=gcpo_geometry",
           "train.steps=2", "train.batch_size=32", "log.eval_every=2", "data.options.size=64",
           f"log.run_dir={run_dir}", "log.console=false"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = read_metrics(run_dir / "metrics.jsonl")  # null (a NaN logged) reads as NaN
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "eval/mean@1" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert [r["step"] for r in eval_rows] == [0, 2]
    for r in train_rows:
        prompts = 32 // 8
        assert r["gcpo/mask_pos"] + r["gcpo/mask_zero"] + r["gcpo/mask_neg"] == prompts
        assert 0.0 <= r["gcpo/aux_rate"] <= 1.0
        # Accuracy split by aux use must average back to the overall accuracy.
        if "gcpo/acc_with_aux" in r and "gcpo/acc_without_aux" in r:
            mixed = r["gcpo/aux_rate"] * r["gcpo/acc_with_aux"] + (1 - r["gcpo/aux_rate"]) * r["gcpo/acc_without_aux"]
            assert abs(mixed - r["reward/accuracy/mean"]) < 1e-5
        # The scalar reward is what GCPO composed: at most acc 1 + fmt 0.5 + aux 0.5 + length 0.5.
        assert -0.5 <= r["reward/mean"] <= 2.5
    # The warm start gives RL something to start from, on held-out problems.
    assert eval_rows[0]["eval/mean@1"] > 0.05
    assert "eval/third_angle/aux_construction/rate" in eval_rows[0]
