"""The sandbox stops loops, memory bombs, network and process creation; code_passes_tests uses it."""

from __future__ import annotations

import socket
import time

import pytest

from rewards.code import code_passes_tests, extract_python_code
from rewards.sandbox import namespace_prefix, run_python_sandboxed


def test_runs_code_with_stdin_in_a_temporary_directory():
    result = run_python_sandboxed("import os, sys\nprint(sys.stdin.read().upper())\nprint(os.getcwd())", stdin="hello")
    assert result.ok and result.returncode == 0 and not result.timed_out
    lines = result.stdout.splitlines()
    assert lines[0] == "HELLO" and "align-sandbox-" in lines[1]


def test_failure_reports_exit_status_and_stderr():
    result = run_python_sandboxed("import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)")
    assert not result.ok and result.returncode == 3 and "bad" in result.stderr


def test_infinite_loop_is_stopped_near_the_timeout():
    start = time.monotonic()
    result = run_python_sandboxed("while True:\n    pass", timeout_s=1)
    assert result.timed_out and not result.ok
    assert time.monotonic() - start < 5


def test_sleeping_program_is_stopped_by_the_wall_clock():
    result = run_python_sandboxed("import time\ntime.sleep(60)", timeout_s=0.5)
    assert result.timed_out and not result.ok


@pytest.mark.parametrize("code", ["x = bytearray(2 * 1024**3)", "a = []\nwhile True:\n    a.append(' ' * 10**7)"])
def test_memory_bomb_is_stopped_by_the_address_space_limit(code):
    result = run_python_sandboxed(code, timeout_s=10, memory_mb=256)
    assert not result.ok and not result.timed_out
    assert "MemoryError" in result.stderr


def test_output_flood_is_capped():
    result = run_python_sandboxed("while True:\n    print('x' * 1000)", timeout_s=5, max_output_bytes=50_000)
    assert not result.ok and len(result.stdout) <= 50_000
    assert "File too large" in result.stderr


@pytest.fixture
def listening_port():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("network_namespace", [None, False])
def test_socket_connect_fails_with_and_without_namespaces(listening_port, network_namespace):
    code = f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {listening_port}))\nprint('connected')"
    result = run_python_sandboxed(code, network_namespace=network_namespace)
    assert not result.ok and "connected" not in result.stdout
    if network_namespace is False:
        assert result.network_isolation == "audit-hook"
        assert "socket.connect is not allowed" in result.stderr


def test_process_creation_is_refused():
    result = run_python_sandboxed("import subprocess\nsubprocess.run(['true'])")
    assert not result.ok and "subprocess.Popen is not allowed" in result.stderr
    result = run_python_sandboxed("import os\nos.fork()")
    assert not result.ok and "os.fork is not allowed" in result.stderr


@pytest.mark.skipif(namespace_prefix() is None, reason="`unshare --net` does not work on this machine")
def test_namespace_leaves_no_network_interface_but_loopback():
    result = run_python_sandboxed("print(open('/proc/net/dev').read())", network_namespace=True)
    assert result.ok and result.network_isolation == "namespace+audit-hook"
    interfaces = {line.split(":")[0].strip() for line in result.stdout.splitlines()[2:] if ":" in line}
    assert interfaces == {"lo"}


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        run_python_sandboxed("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb=8 is too small"):
        run_python_sandboxed("pass", memory_mb=8)


def test_extract_python_code_takes_the_last_python_block():
    text = "first\n```python\nx = 1\n```\nthen\n```py\ndef f():\n    return 2\n```\n```text\nno\n```"
    assert extract_python_code(text) == "def f():\n    return 2\n"
    assert extract_python_code("no code") is None


def test_code_passes_tests_scores_each_completion():
    good = "Here:\n```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    looping = "```python\ndef add(a, b):\n    while True:\n        pass\n```"
    no_code = "add is a + b"
    tests = "assert add(2, 3) == 5"
    completions = [good, wrong, looping, no_code, [{"role": "assistant", "content": good}], good]
    rewards = code_passes_tests(
        ["p"] * 6, completions, tests=[tests] * 5 + [None], timeout_s=1.0, completion_ids=[[1]] * 6, trainer_state=None
    )
    assert rewards == [1.0, 0.0, 0.0, 0.0, 1.0, None]


def test_code_passes_tests_needs_a_tests_column():
    with pytest.raises(ValueError, match="needs a 'tests' column; the batch has: answer"):
        code_passes_tests(["p"], ["c"], answer=["1"])


@pytest.mark.skipif(namespace_prefix() is None, reason="`unshare --net` does not work on this machine")
def test_namespace_blocks_a_connect_that_bypasses_the_audit_hook(listening_port):
    # ctypes reaches libc's connect() without raising the audit event; only the namespace stops it.
    code = (
        "import ctypes, socket, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "s = socket.socket()\n"
        f"addr = struct.pack('<HH4s8x', socket.AF_INET, socket.htons({listening_port}), socket.inet_aton('127.0.0.1'))\n"
        "print(libc.connect(s.fileno(), addr, len(addr)), ctypes.get_errno())\n"
    )
    result = run_python_sandboxed(code, network_namespace=True)
    rc, errno = result.stdout.split()
    assert rc == "-1" and int(errno) != 0
