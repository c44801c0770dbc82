"""bench/gpu_smoke.py runs (on CPU at a tiny shape) and its version-0 probe check can fail the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def smoke(cache_dir: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "bench/gpu_smoke.py", "--model", "tiny", "--steps", "1", "--prompts", "2", "--g", "2",
           "--max-tokens", "4", "--cache-dir", cache_dir, *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_gpu_smoke_reports_the_version_zero_probe_difference(cache_dir):
    proc = smoke(cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    check = lines[0]
    assert check["check"] == "probe_diff_at_version_0" and check["ok"] and check["probe_diff_v0"] <= check["tolerance"]
    assert lines[1]["step"] == 0 and lines[1]["weight_version"] == 1


def test_gpu_smoke_fails_above_the_tolerance(cache_dir):
    proc = smoke(cache_dir, "--tolerance", "-1")
    assert proc.returncode == 1 and "probe difference at weight version 0" in proc.stderr


def test_gpu_smoke_runs_the_vllm_engine(cache_dir):
    """The README's first script on a lent GPU also drives vLLM (here the CPU build): the version-0
    probe, one update verified bit for bit where vLLM keeps checkpoint layouts, the model runner named."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        proc = smoke(cache_dir, "--engine", "vllm")
        assert proc.returncode == 0 and proc.stdout.startswith("skipped: --engine vllm needs vLLM")
        return
    proc = smoke(cache_dir, "--engine", "vllm")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    check, step = lines
    assert check["engine"] == "vllm" and check["model_runner"] in ("v1", "v2") and check["ok"]
    assert step["engine"] == "vllm" and step["weight_version"] == 1 and step["probe_diff"] <= check["tolerance"]
    judged, read_back = step["tensors_compared"]
    assert 0 < judged == read_back  # embedding, norms and fused q/k/v biases on the CPU build
