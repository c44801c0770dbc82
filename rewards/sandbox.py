"""Run untrusted, model-written Python in a separate, limited process. Never in the training process.

Layers, each one independent of the others:

1. A fresh interpreter, `python -I` (isolated mode: no user site, no PYTHON* env, no cwd on sys.path),
   in a temporary working directory that is deleted afterwards, with a minimal environment.
2. Resource limits set by a short prologue in the child before the user code runs: address space
   (`memory_mb`), CPU seconds (timeout + 1), size of any file written (caps stdout/stderr too, which go to
   files), no core dumps. We do not use `preexec_fn` because Python documents it as unsafe when the
   parent has threads, and a trainer always has (torch, vLLM, the reward runner's own timeout threads).
   RLIMIT_NPROC is not set: it counts every process of the user, not of the sandbox, so any useful value
   depends on what else runs; process creation is blocked by layer 4 and bounded by the PID namespace.
3. Network: when `unshare` works here, the child runs in new network and PID namespaces
   (`unshare --net --map-root-user --pid --fork --kill-child`): no interface but a down loopback, and every
   process it starts dies with it. Where namespaces are unavailable (containers without user namespaces),
   layer 4 is the documented fallback.
4. An audit hook (PEP 578) installed before the user code refuses socket connect/bind/send/getaddrinfo and
   process creation (fork, exec, spawn, system, subprocess). Audit hooks cannot be removed from Python, but
   code reaching libc through ctypes can bypass them: on their own they are a guard rail, not a wall.
5. A wall-clock timeout that kills the child's whole process group.

Do not run training as root if you execute untrusted code: a root child could raise its own limits.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Tried in order; the first that runs `true` successfully is used for every sandboxed run.
_NAMESPACE_PREFIXES: tuple[tuple[str, ...], ...] = (
    ("unshare", "--net", "--map-root-user", "--pid", "--fork", "--kill-child"),
    ("unshare", "--net", "--pid", "--fork", "--kill-child"),
    ("unshare", "--net", "--map-root-user"),
    ("unshare", "--net"),
)

_BLOCKED_AUDIT_EVENTS = (
    "socket.connect",
    "socket.bind",
    "socket.sendto",
    "socket.sendmsg",
    "socket.getaddrinfo",
    "os.fork",
    "os.forkpty",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.system",
    "subprocess.Popen",
)

# Runs in the child before the user's file: limits first, then the audit hook, then the program itself.
_PROLOGUE = """\
import resource, sys
_limits = {limits!r}
for _name, _value in _limits.items():
    resource.setrlimit(getattr(resource, _name), (_value, _value))
_blocked = frozenset({blocked!r})
def _sandbox_guard(event, args):
    if event in _blocked:
        raise PermissionError("sandbox: " + event + " is not allowed")
sys.addaudithook(_sandbox_guard)
del resource, _limits, _name, _value
import runpy
sys.argv = ["solution.py"]
runpy.run_path("solution.py", run_name="__main__")
"""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run. ok: exited with status 0 within the limits."""

    ok: bool
    stdout: str
    stderr: str
    timed_out: bool
    returncode: int
    network_isolation: str  # "namespace+audit-hook" or "audit-hook"


@functools.lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...] | None:
    """The `unshare` command prefix that works on this machine, or None when namespaces are unavailable."""
    if shutil.which("unshare") is None:
        return None
    for prefix in _NAMESPACE_PREFIXES:
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return None


def run_python_sandboxed(
    code: str,
    timeout_s: float = 5,
    memory_mb: int = 256,
    stdin: str = "",
    *,
    max_output_bytes: int = 1 << 20,
    network_namespace: bool | None = None,
) -> SandboxResult:
    """Run `code` as a Python program in a limited child process and return its exit status and output.

    network_namespace: None uses namespaces when available (else the audit-hook fallback), True requires
    them (error when unavailable), False skips them (audit hook only).
    max_output_bytes: cap on stdout, on stderr and on any file the program writes; going over kills it.
    """
    if timeout_s <= 0:
        raise ValueError(f"run_python_sandboxed: timeout_s must be > 0, got {timeout_s}")
    if memory_mb < 32:
        raise ValueError(f"run_python_sandboxed: memory_mb={memory_mb} is too small to start Python; use >= 32")
    prefix: tuple[str, ...] = ()
    if network_namespace is not False:
        prefix = namespace_prefix() or ()
        if network_namespace and not prefix:
            raise RuntimeError("run_python_sandboxed: network_namespace=True but `unshare --net` does not work here")
    isolation = "namespace+audit-hook" if prefix else "audit-hook"

    limits = {
        "RLIMIT_AS": memory_mb << 20,
        "RLIMIT_CPU": math.ceil(timeout_s) + 1,
        "RLIMIT_FSIZE": max_output_bytes,
        "RLIMIT_CORE": 0,
    }
    prologue = _PROLOGUE.format(limits=limits, blocked=sorted(_BLOCKED_AUDIT_EVENTS))
    with tempfile.TemporaryDirectory(prefix="align-sandbox-") as workdir:
        work = Path(workdir)
        (work / "solution.py").write_text(code)
        (work / "stdin.txt").write_text(stdin)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            # Thread pools of numeric libraries reserve address space per thread; one thread keeps them under RLIMIT_AS.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        command = [*prefix, sys.executable, "-I", "-c", prologue]
        with (
            open(work / "stdin.txt", "rb") as stdin_file,
            open(work / "stdout.txt", "wb") as stdout_file,
            open(work / "stderr.txt", "wb") as stderr_file,
        ):
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=stdin_file,
                stdout=stdout_file,
                stderr=stderr_file,
                start_new_session=True,  # its own process group, so the kill below reaches every descendant
            )
            timed_out = False
            try:
                returncode = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(process)
                returncode = process.wait()
        stdout = _read_capped(work / "stdout.txt", max_output_bytes)
        stderr = _read_capped(work / "stderr.txt", max_output_bytes)

    # Hitting RLIMIT_CPU ends the child with SIGXCPU (or SIGKILL at the hard limit): also a timeout.
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL) or returncode in (128 + signal.SIGXCPU, 128 + signal.SIGKILL):
        timed_out = True
    if returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        stderr += f"\nsandbox: output or file size limit of {max_output_bytes} bytes exceeded"
    return SandboxResult(
        ok=returncode == 0 and not timed_out,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        returncode=returncode,
        network_isolation=isolation,
    )


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")
