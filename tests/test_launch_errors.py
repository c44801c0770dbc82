"""Under the README's launcher a bad input still ends with one `align: error:` line and status 2.

`accelerate launch` turns a child's non-zero exit into its own traceback and status 1 (see
align/cli/launch.py); these run the README's own command, so the README cannot drift back to it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_launcher() -> list[str]:
    """The launcher of the README's quick start (`... && LAUNCHER align/train.py recipe=gcpo_geometry`)."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"&& (\S+ launch) align/train\.py recipe=gcpo_geometry", text)
    assert found, "README's quick start no longer launches align/train.py recipe=gcpo_geometry"
    return found.group(1).split()


def launch(flags: list[str], *train_args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*readme_launcher(), *flags, "align/train.py", *train_args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1] == f"align: error: {message}", result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "CalledProcessError" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, result.stderr[-3000:]


def test_readme_launcher_ends_a_bad_key_with_one_line_and_status_2():
    result = launch(["--num_processes", "1", "--cpu"], "recipe=gcpo_geometry", "train.stpes=1")
    assert_one_line_error(result, "unknown config key 'train.stpes'; did you mean 'train.steps'?")


@pytest.mark.slow
def test_readme_launcher_ends_a_bad_key_with_one_line_under_torch_elastic_too():
    # Two ranks under DeepSpeed (torch elastic's launcher, which --quiet does not cover), on CPU over gloo.
    result = launch(["--config_file", "launch/zero3.yaml", "--num_processes", "2"],
                    "recipe=gcpo_geometry", "train.stpes=1")
    assert_one_line_error(result, "unknown config key 'train.stpes'; did you mean 'train.steps'?")
    assert "FAILED" not in result.stderr  # torch elastic's summary is for failures that did not say why


def test_launcher_status_is_the_childs_when_it_fails_otherwise(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text("import sys\nsys.exit(7)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "align", "launch", "--num_processes", "1", "--cpu", str(script)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 7 and "CalledProcessError" not in result.stderr, result.stderr[-3000:]


NATIVE_CRASH = (f"reward.functions=[{ROOT / 'tests' / 'trainers' / 'rewards_for_tests.py'}:native_crash]", "reward.weights=[1.0]",
                "train.steps=1", "log.eval_every=0")


@pytest.mark.parametrize("flags", [
    ["--num_processes", "1", "--cpu"],
    pytest.param(["--config_file", "launch/zero3.yaml", "--num_processes", "2"], marks=pytest.mark.slow),
], ids=["one-process", "two-ranks"])
def test_a_reward_that_crashes_in_native_code_is_named_and_the_status_says_so(flags, tmp_path):
    # A segfault cannot be caught: the trainer's faulthandler prints the Python stack (which names the
    # reward function), and the launcher adds one line saying which signal ended it and how to go on.
    result = launch(flags, "recipe=grpo_math", *NATIVE_CRASH, f"log.run_dir={tmp_path}/run")
    assert result.returncode == 128 + 11, (result.returncode, result.stderr[-3000:])
    assert "Segmentation fault" in result.stderr and "in native_crash" in result.stderr, result.stderr[-3000:]
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("align: error: the training process was killed by SIGSEGV") and "resume=latest" in last, last
    assert "CalledProcessError" not in result.stderr
