"""bench/gpu_w1.py --engine vllm: its skip line, its CPU refusal, and what it records of align's engine.

The whole vllm mode cannot run on CPU (TRL's colocated vLLM compiles its model, which the CPU build
cannot do in a process where align's eager engine switched dynamo off), so align's side of it runs
here at the tiny shape through the script's own `align_side`: the vLLM release, the model runner,
the probe difference at weight version 0 and after each update, as the benchmark writes them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--shape", "tiny", "--prompts", "2", "--G", "2", "--max-tokens", "4", "--prompt-len", "8", "--steps", "1",
        "--warmup", "0", "--micro-batch", "4"]


def run_python(code: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}"}
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def run_gpu_w1(*argv: str, hide_vllm: bool = False) -> subprocess.CompletedProcess:
    """The script as a user runs it; hide_vllm sets sys.modules["vllm"] = None first (find_spec then
    answers None and the import fails, as where vLLM is not installed)."""
    hide = "sys.modules['vllm'] = None; " if hide_vllm else ""
    return run_python(f"import runpy, sys; {hide}sys.argv = ['bench/gpu_w1.py', *sys.argv[1:]]; "
                      "runpy.run_path('bench/gpu_w1.py', run_name='__main__')", *argv)


def test_gpu_w1_vllm_mode_skips_in_one_line_without_vllm(tmp_path):
    """vLLM hidden: one line, exit 0, no results file."""
    out = tmp_path / "w1.json"
    proc = run_gpu_w1("--engine", "vllm", *TINY, "--out", str(out), hide_vllm=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "skipped: --engine vllm needs vLLM, which is not installed here (pip install 'align[vllm-cuda]')"]
    assert not out.exists()


needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")


@needs_vllm
def test_gpu_w1_vllm_mode_refuses_cpu_in_one_line(tmp_path):
    out = tmp_path / "w1.json"
    proc = run_gpu_w1("--engine", "vllm", *TINY, "--out", str(out))
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        "--engine vllm compares against TRL's colocated vLLM, which needs a CUDA GPU; use --engine hf on CPU"]


ALIGN_SIDE = """
import json, sys
from pathlib import Path
import gpu_w1

args = gpu_w1.parse_args(sys.argv[2:])
tmp = Path(sys.argv[1])
data = gpu_w1.write_prompts(tmp / "prompts.jsonl", 8, args.prompt_len)
runner, record = gpu_w1.align_side(args, gpu_w1.write_model(tmp / "model", args.shape), data, tmp)
for _ in range(2):
    runner.step()
runner.close()
print(json.dumps(record))
print(gpu_w1.engine_line(record))
"""


@needs_vllm
@pytest.mark.slow  # builds a vLLM engine (~50 s); CI runs it with -m slow
def test_gpu_w1_vllm_mode_records_the_model_runner_and_probe_differences(tmp_path):
    """align's side of `--engine vllm` on the CPU build: runner v1/v2 and the vLLM release named, the
    version-0 probe difference finite and within its tolerance, one probe difference per update."""
    import vllm

    proc = run_python(ALIGN_SIDE, str(tmp_path), "--engine", "vllm", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *_, record_line, table_line = proc.stdout.strip().splitlines()
    record = json.loads(record_line)
    assert record["engine"] == "vllm" and record["vllm"] == vllm.__version__
    assert record["model_runner"] in ("v1", "v2")
    v0, tolerance = record["probe_diff_v0"], record["probe_tolerance"]
    assert isinstance(v0, float) and math.isfinite(v0) and 0 <= v0 <= tolerance
    assert [u["weight_version"] for u in record["after_update"]] == [1, 2]
    assert all(math.isfinite(u["probe_diff"]) and u["probe_diff"] <= tolerance for u in record["after_update"])
    assert table_line.startswith(f"align engine vllm {vllm.__version__} (model runner {record['model_runner']}): "
                                 f"probe difference at version 0 {v0:.3g}, after updates v1 ")


def test_gpu_w1_writes_the_engine_record_into_its_json_and_table(tmp_path):
    """The whole benchmark (HF engine, the mode a CPU runs): the record under "align_engine" and its line."""
    pytest.importorskip("trl")
    out = tmp_path / "w1.json"
    proc = run_gpu_w1(*TINY, "--workdir", str(tmp_path / "work"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())["align_engine"]
    assert record["engine"] == "hf" and "model_runner" not in record
    assert math.isfinite(record["probe_diff_v0"]) and record["probe_diff_v0"] <= record["probe_tolerance"]
    assert [u["weight_version"] for u in record["after_update"]] == [1]  # TINY: one step, no warm-up
    line = next(line for line in proc.stdout.splitlines() if line.startswith("align engine hf: "))
    assert f"probe difference at version 0 {record['probe_diff_v0']:.3g}, after updates v1 " in line
