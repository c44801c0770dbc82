"""Run untrusted, model-written Python in a confined process. Never in the training process.

Default isolation ("bwrap"): bubblewrap starts the interpreter in new user, mount, PID, network, IPC,
UTS and cgroup namespaces, with all capabilities dropped, as uid/gid 65534, in a new session, dying with
its parent. The filesystem it sees is built from nothing: read-only binds of the interpreter, its
standard library and the system's shared libraries; a read-only /sandbox holding the program; a private,
size-limited tmpfs at /tmp (its working directory); a minimal /dev. No /proc at all (no view of other
processes or their environment), no /etc, /home, /root or project directory, an empty environment, and no
network interface but a down loopback. A seccomp filter (rewards/seccomp.py) refuses process creation,
which also makes a fork bomb impossible.

Inside, a short harness (rewards/_sandbox_harness.py) sets rlimits before any user code runs: address
space (memory_mb), CPU seconds, size of one file, open files, processes, no core dumps; and installs an
audit hook (PEP 578) that refuses frame and garbage-collector introspection, ctypes, /proc, signals,
sockets and process creation, so the program cannot reach into the harness.

Tests run in a second sandbox of their own (run_tests_sandboxed): the solution's sandbox holds no tests,
the tests' sandbox never runs solution code, and the two exchange only plain data through two pipes.

Outside, this module reads stdout and stderr through pipes with one cap on their total size, and kills
the sandbox at the wall-clock limit or when the cap is exceeded (bwrap's --die-with-parent and the PID
namespace take every process inside down with it).

Where bubblewrap is missing or cannot create namespaces, running model code is refused with a one-line
`SandboxUnavailable` naming the fix. `ALIGN_SANDBOX=weak` (or `isolation="weak"`) opts into the weaker
mode documented in the README: the same harness, rlimits and audit hook in a plain child process, plus
`unshare` network/PID namespaces when they work; the audit hook is a guard rail, not a wall (ctypes-free
code cannot get past it, but it is not a kernel boundary).
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from align.errors import UserError
from rewards.seccomp import no_new_processes_filter

_HARNESS = Path(__file__).with_name("_sandbox_harness.py")
_ISOLATION_MODES = ("bwrap", "weak")
_INSTALL_HINT = (
    "install bubblewrap (`apt-get install bubblewrap libseccomp2`; scripts/setup.sh does) or set ALIGN_SANDBOX=weak "
    "to accept a weaker sandbox (rlimits and an audit hook, not a kernel boundary)"
)

# Weak mode: `unshare` prefixes tried in order; the first that runs `true` is used.
_NAMESPACE_PREFIXES: tuple[tuple[str, ...], ...] = (
    ("unshare", "--net", "--map-root-user", "--pid", "--fork", "--kill-child"),
    ("unshare", "--net", "--pid", "--fork", "--kill-child"),
    ("unshare", "--net", "--map-root-user"),
    ("unshare", "--net"),
)


class SandboxUnavailable(UserError, RuntimeError):
    """No sandbox strong enough is available here; the message (one line) names the fix."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    ok: exited with status 0 within every limit (program mode), or the tests passed (tests mode).
    tests_passed: tests mode only: the harness printed this run's token after the last test.
    output_exceeded: stdout + stderr went over max_output_bytes (the run was killed).
    isolation: "bwrap" or "weak" (+ "+unshare" when weak mode got namespaces).
    """

    ok: bool
    stdout: str
    stderr: str
    timed_out: bool
    returncode: int
    isolation: str
    output_exceeded: bool = False
    tests_passed: bool | None = None


def isolation_mode(requested: str | None = None) -> str:
    """"bwrap" (default) or "weak": the argument, else $ALIGN_SANDBOX, else "bwrap"."""
    mode = requested or os.environ.get("ALIGN_SANDBOX") or "bwrap"
    if mode not in _ISOLATION_MODES:
        raise ValueError(f"sandbox isolation {mode!r} is not one of {list(_ISOLATION_MODES)} (ALIGN_SANDBOX or isolation=)")
    return mode


@functools.lru_cache(maxsize=1)
def _interpreter() -> str:
    # The base interpreter, not a venv's: the sandbox gets the standard library only, no site-packages of ours.
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@functools.lru_cache(maxsize=1)
def _bwrap_filesystem() -> tuple[str, ...]:
    """bwrap arguments for a read-only view of what the interpreter needs, and nothing else."""
    args: list[str] = []
    bound: list[str] = []

    def bind(path: str) -> None:
        real = os.path.realpath(path)
        if not os.path.exists(real) or any(real == b or real.startswith(b + "/") for b in bound):
            return
        bound.append(real)
        args.extend(["--ro-bind", real, real])
        if real != path and os.path.isabs(path) and not any(path == b or path.startswith(b + "/") for b in bound):
            args.extend(["--symlink", real, path])

    # System shared libraries (libc, libm, the dynamic loader); on merged-/usr systems /lib* are symlinks.
    for path in ("/usr/lib", "/usr/lib64", "/usr/lib32"):
        bind(path)
    for path in ("/lib", "/lib64", "/lib32"):
        if os.path.islink(path):
            args.extend(["--symlink", os.readlink(path), path])
        elif os.path.isdir(path):
            bind(path)
    bind(_interpreter())
    # The base installation's standard library; a venv's own lib/ (its site-packages) stays out.
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
            "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}  # fmt: skip
    paths = sysconfig.get_paths(vars=base)
    for key in ("stdlib", "platstdlib"):
        bind(paths[key])
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname:
        bind(os.path.join(libdir, soname))
    return tuple(args)


def _seccomp_filter() -> bytes:
    bpf = no_new_processes_filter()
    if bpf is None:
        raise SandboxUnavailable(f"code sandbox: libseccomp is not installed; {_INSTALL_HINT}")
    return bpf


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot confine code here (one line), or None when it can."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    if no_new_processes_filter() is None:
        return "libseccomp is not installed"
    with tempfile.TemporaryDirectory(prefix="align-sandbox-probe-") as box:
        Path(box, "probe.py").write_text("print('ok')\n")
        try:
            probe = _start_bwrap(box, [_interpreter(), "-I", "-S", "/sandbox/probe.py"], tmp_mb=1)
            out, err = probe.communicate(timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bwrap failed to start: {error}"
    if probe.returncode != 0 or out.strip() != b"ok":
        text = " ".join(err.decode(errors="replace").split())[:200]
        return f"bwrap cannot create its namespaces here ({text or f'exit status {probe.returncode}'})"
    return None


def _start_bwrap(box: str, argv: list[str], tmp_mb: int, pass_fds: tuple[int, ...] = (), **popen) -> subprocess.Popen:
    bpf_read, bpf_write = os.pipe()
    bpf = _seccomp_filter()
    # The filter (a few hundred bytes) fits in the pipe buffer, so writing it before bwrap reads cannot block.
    os.write(bpf_write, bpf)
    os.close(bpf_write)
    command = [
        "bwrap",
        "--unshare-all",  # user, mount, PID, network, IPC, UTS, cgroup
        "--unshare-user",  # bwrap only "tries" a user namespace under --unshare-all; require it
        "--uid", "65534", "--gid", "65534",
        "--cap-drop", "ALL",
        "--die-with-parent",
        "--new-session",
        *_bwrap_filesystem(),
        "--dev", "/dev",
        "--ro-bind", box, "/sandbox",
        "--size", str(tmp_mb << 20), "--tmpfs", "/tmp",
        "--chdir", "/tmp",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",
        "--setenv", "TMPDIR", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONHASHSEED", "0",
        "--seccomp", str(bpf_read),
        *argv,
    ]  # fmt: skip
    try:
        return subprocess.Popen(
            command,
            stdin=popen.pop("stdin", subprocess.DEVNULL),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(bpf_read, *pass_fds),
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            **popen,
        )
    finally:
        os.close(bpf_read)


@functools.lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...] | None:
    """Weak mode: the `unshare` prefix that works here, or None when namespaces are unavailable."""
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
    tmp_mb: int = 16,
    isolation: str | None = None,
) -> SandboxResult:
    """Run `code` as a Python program (`__main__`) in the sandbox; ok = exit status 0 within the limits.

    timeout_s: wall-clock limit (CPU time is limited to the same, rounded up). memory_mb: address space.
    max_output_bytes: cap on stdout + stderr together (and on any one file written); going over kills it.
    tmp_mb: size of the private /tmp (bwrap mode). isolation: "bwrap" / "weak" / None ($ALIGN_SANDBOX).
    """
    return _run(code, None, stdin.encode(), timeout_s, memory_mb, max_output_bytes, tmp_mb, isolation)


def run_tests_sandboxed(
    solution: str,
    tests: str,
    timeout_s: float = 5,
    memory_mb: int = 256,
    *,
    max_output_bytes: int = 1 << 20,
    tmp_mb: int = 16,
    isolation: str | None = None,
) -> SandboxResult:
    """Run `tests` against `solution` with the comparisons out of the solution's reach.

    Two sandboxes, each with the limits above: one imports `solution` as the module `solution` (the tests are
    not in it), the other is a fresh interpreter that runs `tests` with pristine builtins and standard library
    and never imports the solution. There, each of the solution's top-level functions is a proxy: a call sends
    its arguments to the solution's sandbox as plain data and returns the answer decoded as plain data by exact
    type (None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset), so no `__eq__` of the
    solution's ever runs; an exception arrives as the built-in class it derives from, with its args. Plain
    values among the solution's globals arrive by value, its standard modules as the tests' own copies; no
    solution name shadows a builtin. Anything else returned (an object, a subclass, a generator), a malformed
    answer or a solution process that ends mid-test fails the run at once, past any `except` in the tests.

    Passing means the tests' harness printed a random token, given to it alone on stdin, after the last test:
    `os._exit(0)` or `SystemExit(0)` during the tests, or a crash, is a failure whatever the exit status.
    Limitation (by design): the tests see return values, not the solution's objects, so a test that needs
    an instance of the solution's class or checks that an argument was mutated in place cannot pass.
    """
    return _run(solution, tests, b"", timeout_s, memory_mb, max_output_bytes, tmp_mb, isolation)


def _validate(timeout_s: float, memory_mb: int, max_output_bytes: int, tmp_mb: int) -> None:
    if not timeout_s > 0:
        raise ValueError(f"sandbox: timeout_s must be > 0, got {timeout_s}")
    if memory_mb < 32:
        raise ValueError(f"sandbox: memory_mb={memory_mb} is too small to start Python; use >= 32")
    if max_output_bytes < 1:
        raise ValueError(f"sandbox: max_output_bytes must be >= 1, got {max_output_bytes}")
    if tmp_mb < 1:
        raise ValueError(f"sandbox: tmp_mb must be >= 1, got {tmp_mb}")


def _run(
    code: str,
    tests: str | None,
    stdin: bytes,
    timeout_s: float,
    memory_mb: int,
    max_output_bytes: int,
    tmp_mb: int,
    isolation: str | None,
) -> SandboxResult:
    _validate(timeout_s, memory_mb, max_output_bytes, tmp_mb)
    mode = isolation_mode(isolation)
    if mode == "bwrap":
        problem = bwrap_problem()
        if problem is not None:
            raise SandboxUnavailable(f"code sandbox: {problem}; {_INSTALL_HINT}")

    token = secrets.token_hex(16)
    limits = {
        "RLIMIT_AS": memory_mb << 20,
        "RLIMIT_CPU": math.ceil(timeout_s) + 1,
        "RLIMIT_FSIZE": min(max_output_bytes, tmp_mb << 20),
        "RLIMIT_NOFILE": 64,
        "RLIMIT_NPROC": 16,  # binds where the sandbox is not root-mapped; seccomp covers the rest
        "RLIMIT_CORE": 0,
    }
    with tempfile.TemporaryDirectory(prefix="align-sandbox-") as box:
        if tests is None:
            process, isolation_used = _launch(Path(box), "program", {"solution.py": code}, limits, (), mode, tmp_mb)
            outputs = _communicate([process], stdin, timeout_s, max_output_bytes)
            (stdout, stderr), timed_out, exceeded = outputs[0][0], outputs[1], outputs[2]
            returncode = process.returncode
        else:
            # Two sandboxes joined by two pipes: the solution's (no tests in it) and the tests' (no solution code).
            to_solution, from_solution = os.pipe(), os.pipe()
            solution_fds = (to_solution[0], from_solution[1])
            tests_fds = (to_solution[1], from_solution[0])
            try:
                tests_process, isolation_used = _launch(
                    Path(box, "tests"), "tests", {"tests.py": tests}, limits, tests_fds, mode, tmp_mb
                )
                solution_process, _ = _launch(
                    Path(box, "solution"), "solution", {"solution.py": code}, limits, solution_fds, mode, tmp_mb
                )
            finally:
                for fd in (*solution_fds, *tests_fds):
                    os.close(fd)  # each end now lives only in the sandbox that uses it: a dead peer reads as EOF
            # The token reaches the tests' harness alone, before any test runs.
            outputs = _communicate([tests_process, solution_process], token.encode() + b"\n", timeout_s, max_output_bytes)
            ((tests_out, tests_err), (solution_out, solution_err)), timed_out, exceeded = outputs
            stdout, stderr = solution_out + tests_out, solution_err + tests_err
            returncode = tests_process.returncode

    out_text = stdout.decode("utf-8", errors="replace")
    err_text = stderr.decode("utf-8", errors="replace")
    # Hitting RLIMIT_CPU ends the child with SIGXCPU (or SIGKILL at the hard limit): also a timeout.
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        timed_out = True
    if exceeded:
        err_text += f"\nsandbox: output limit of {max_output_bytes} bytes exceeded"
    if returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        err_text += "\nsandbox: file size limit exceeded"
    tests_passed = None
    if tests is not None:
        # Only the tests' process knows the token; the solution's output is not searched for it.
        tests_passed = not timed_out and not exceeded and token in tests_out.decode("utf-8", errors="replace").splitlines()
        out_text = "\n".join(line for line in out_text.splitlines() if line != token)
        ok = tests_passed
    else:
        ok = returncode == 0 and not timed_out and not exceeded
    return SandboxResult(ok, out_text, err_text, timed_out, returncode, isolation_used, exceeded, tests_passed)


def _launch(
    box: Path, role: str, files: dict[str, str], limits: dict, fds: tuple[int, ...], mode: str, tmp_mb: int
) -> tuple[subprocess.Popen, str]:
    """Start the harness in `role` in its own sandbox over `box` (harness.py + `files`), keeping `fds` open."""
    box.mkdir(exist_ok=True)
    Path(box, "harness.py").write_text(_HARNESS.read_text())
    for name, text in files.items():
        Path(box, name).write_text(text)
    settings = repr({"mode": role, "limits": limits, "fds": list(fds)})
    # Tests mode: -S too (no site: the interpreter's site-packages and .pth hooks stay out, the standard library
    # is all either side gets, and each interpreter starts in about half the time). Programs keep site's exit().
    flags = ["-I"] if role == "program" else ["-I", "-S"]
    if mode == "bwrap":
        argv = [_interpreter(), *flags, "/sandbox/harness.py", settings]
        return _start_bwrap(str(box), argv, tmp_mb, pass_fds=fds, stdin=subprocess.PIPE), "bwrap"
    prefix = namespace_prefix() or ()
    work = Path(box, "tmp")
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
    process = subprocess.Popen(
        [*prefix, _interpreter(), *flags, str(Path(box, "harness.py")), settings],
        cwd=work,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=fds,
        start_new_session=True,
    )
    return process, "weak+unshare" if prefix else "weak"


def _communicate(
    processes: list[subprocess.Popen], stdin: bytes, timeout_s: float, cap: int
) -> tuple[list[tuple[bytes, bytes]], bool, bool]:
    """Feed stdin to the first process, read every stdout/stderr up to `cap` bytes in total until the first
    process is done and the others have ended (killed 0.5 s later; everything at the deadline or past the cap).

    Returns ([(stdout, stderr) per process], timed_out, exceeded).
    """
    main = processes[0]

    def feed() -> None:
        try:
            main.stdin.write(stdin)
            main.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the program exited or closed its stdin: nothing more to give it

    for other in processes[1:]:
        other.stdin.close()
    writer = threading.Thread(target=feed, name="sandbox-stdin", daemon=True)
    writer.start()
    chunks: dict[int, list[bytes]] = {p.stdout.fileno(): [] for p in processes} | {p.stderr.fileno(): [] for p in processes}
    main_fds = {main.stdout.fileno(), main.stderr.fileno()}
    total = 0
    timed_out = exceeded = False
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        for process in processes:
            selector.register(process.stdout, selectors.EVENT_READ)
            selector.register(process.stderr, selectors.EVENT_READ)
        drain_until = None
        while selector.get_map():
            if drain_until is None and not main_fds & set(selector.get_map()):
                # The main program is done: the others see it (EOF) and end; after a grace period they are killed.
                drain_until = min(deadline, time.monotonic() + 0.5)
            remaining = (drain_until or deadline) - time.monotonic()
            if remaining <= 0:
                timed_out = drain_until is None
                break
            for key, _ in selector.select(remaining):
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                keep = data[: max(0, cap - total)]
                chunks[key.fd].append(keep)
                total += len(data)
                if total > cap:
                    exceeded = True
                    break
            if exceeded:
                break
    if timed_out or exceeded:
        for process in processes:
            _kill_group(process)
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        except subprocess.TimeoutExpired:
            # Pipes closed but the process lives on (it closed its own stdout): the wall clock still applies.
            _kill_group(process)
            process.wait()
            timed_out = timed_out or process is main
    for process in processes[1:]:
        _kill_group(process)
    writer.join(timeout=1.0)
    outputs = []
    for process in processes:
        outputs.append((b"".join(chunks[process.stdout.fileno()]), b"".join(chunks[process.stderr.fileno()])))
        process.stdout.close()
        process.stderr.close()
    return outputs, timed_out, exceeded


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
