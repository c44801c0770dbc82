"""The program the sandbox runs (rewards/sandbox.py): limits, a guard, then the untrusted code.

Runs as `python -I harness.py SETTINGS` beside solution.py (and tests.py). Standard library only: the
sandbox has nothing else. Everything the harness needs later (os.write, os._exit, exec, the compiled
tests, a copy of the builtins, the token) is taken before the first line of untrusted code runs, and
lives only in this function's frame, which the audit hook keeps the untrusted code from reaching:
sys._getframe, traceback/generator frames, sys._current_frames, tracing/profiling hooks, gc referrers,
ctypes, /proc and signal handlers (which receive frames) are all refused.
"""

import os
import sys


def _main(settings_text):
    import ast
    import builtins
    import importlib.util
    import resource
    import sysconfig

    settings = ast.literal_eval(settings_text)
    here = os.path.dirname(os.path.abspath(__file__))
    write, exit_now, exec_, realpath, fsdecode = os.write, os._exit, exec, os.path.realpath, os.fsdecode
    mode = settings["mode"]
    token = b""
    tests = None
    if mode == "tests":
        # The parent writes exactly one line (the token) and closes the pipe: read it all, before any user code.
        while True:
            chunk = os.read(0, 256)
            if not chunk:
                break
            token += chunk
        token = token.strip()
        with open(os.path.join(here, "tests.py"), encoding="utf-8") as f:
            tests = compile(f.read(), "tests.py", "exec")
        clean_builtins = dict(vars(builtins))
    stdout = sys.stdout

    for name, value in settings["limits"].items():
        kind = getattr(resource, name)
        hard = resource.getrlimit(kind)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))

    work = realpath(os.getcwd())
    paths = sysconfig.get_paths()
    read_roots = tuple(
        {realpath(p) for p in (here, work, paths["stdlib"], paths["platstdlib"], sys.base_prefix, "/usr/lib", "/usr/lib64", "/lib", "/lib64")}
    ) + ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")  # not /dev/mem or a disk (weak mode may run as root)
    write_roots = (work, "/dev/null")
    frame_attributes = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})
    refused = frozenset(
        {
            "sys._current_frames", "sys.settrace", "sys.setprofile", "sys.addaudithook",
            "gc.get_objects", "gc.get_referrers", "gc.get_referents",
            "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
            "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
            "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit", "resource.prlimit",
        }
    )  # fmt: skip
    refused_imports = frozenset({"signal", "_signal", "_posixsubprocess", "ctypes", "_ctypes", "faulthandler", "_tracemalloc"})
    path_events = frozenset(
        {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink", "os.link", "os.truncate", "os.utime"}
    )
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path, roots):
        if isinstance(path, int):  # an open file descriptor: already checked when it was opened
            return True
        full = realpath(fsdecode(path))
        return any(full == root or full.startswith(root.rstrip("/") + "/") for root in roots)

    def guard(event, args):
        if event == "sys._getframe":
            # ValueError is what "no such frame" raises, so namedtuple/typing/enum carry on without a module name.
            raise ValueError("sandbox: frame introspection is not allowed")
        if event in refused or event.startswith("ctypes."):
            raise PermissionError("sandbox: " + event + " is not allowed")
        if event == "object.__getattr__" and args[1] in frame_attributes:
            raise PermissionError("sandbox: reading " + args[1] + " is not allowed")
        if event == "import" and args[0].partition(".")[0] in refused_imports:
            raise PermissionError("sandbox: importing " + args[0] + " is not allowed")
        if event == "open":
            path, flags = args[0], args[2] or 0
            if path is not None and not inside(path, write_roots if flags & write_flags else read_roots):
                raise PermissionError("sandbox: opening " + fsdecode(path) + " is not allowed")
        elif event in path_events:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path, write_roots):
                    raise PermissionError("sandbox: " + event + " outside the working directory is not allowed")

    # Modules already loaded at start-up stay reachable through sys.modules without an import event.
    for name in list(sys.modules):
        if name.partition(".")[0] in refused_imports:
            del sys.modules[name]
    sys.addaudithook(guard)
    sys.argv = ["solution.py"]
    solution_path = os.path.join(here, "solution.py")

    if mode == "program":
        import runpy

        runpy.run_path(solution_path, run_name="__main__")
        return

    spec = importlib.util.spec_from_file_location("solution", solution_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["solution"] = module
    spec.loader.exec_module(module)
    namespace = dict(vars(module))
    namespace["__builtins__"] = clean_builtins
    namespace["__name__"] = "__tests__"
    exec_(tests, namespace)
    # Reached only when every test ran and none raised; the solution's unflushed output goes first.
    try:
        stdout.flush()
    except BaseException:  # noqa: BLE001 - a broken stdout of the solution's making must not stop the verdict
        pass
    write(1, b"\n" + token + b"\n")
    exit_now(0)


if __name__ == "__main__":
    _main(sys.argv[1])
