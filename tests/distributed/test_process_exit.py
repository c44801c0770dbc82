"""end_launched_process: a finished rank of a multi-process launch skips the interpreter's teardown
(where leftover gloo threads aborted a finished run now and then), and keeps what it printed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import atexit
from align.errors import end_launched_process
atexit.register(lambda: print("interpreter teardown ran", flush=True))
print("the run's last line", end="")  # unflushed: os._exit must not lose it
end_launched_process()
print(" - and the process went on")
"""


@pytest.mark.parametrize("world", ["1", "2"])
def test_a_rank_of_a_launch_exits_at_once_with_its_output_and_a_single_process_normally(world):
    env = {**os.environ, "WORLD_SIZE": world, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if world == "2":
        assert proc.stdout == "the run's last line"
    else:
        assert proc.stdout == "the run's last line - and the process went on\ninterpreter teardown ran\n"


def test_a_one_line_error_in_a_rank_of_a_launch_keeps_its_status_without_the_teardown():
    script = """
import atexit
from align.errors import UserError, exit_on_user_error
atexit.register(lambda: print("interpreter teardown ran", flush=True))
with exit_on_user_error():
    raise UserError("bad key")
"""
    env = {**os.environ, "WORLD_SIZE": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, "align: error: bad key\n", "")
