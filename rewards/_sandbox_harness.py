"""The program the sandbox runs (rewards/sandbox.py): limits, a guard, then one of three roles.

Runs as `python -I harness.py SETTINGS` beside solution.py or tests.py (never both). Standard library
only: the sandbox has nothing else.

- program: solution.py runs as `__main__`.
- solution: solution.py is imported as the module `solution`; the harness sends the tests' process the
  list of its top-level names (functions, standard modules, plain values), then answers calls: a request
  names a function and carries its arguments as plain data, the answer is the return value as plain data
  (or the built-in exception class it raised, with plain-data args). The tests are not in this sandbox.
- tests: a fresh interpreter that never imports, receives or runs anything of the solution's. The tests
  run over pristine builtins and standard library, with each solution function replaced by a proxy that
  forwards the call to the solution's process and decodes the answer. Anything but plain data by exact
  type (None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset), a dead solution
  process or a malformed answer ends this process at once without a verdict, so no `except` in the
  tests can swallow it. After the last test the harness prints this run's random token (given to it alone
  on stdin): the verdict. The audit hook keeps frames, ctypes, signals, sockets, /proc and process
  creation away from the untrusted code, as before.
"""

import os
import sys

_SCALARS = (type(None), bool, int, float, str)
_MAX_DEPTH = 200
_MAX_FRAME = 64 << 20


class NotPlainData(Exception):
    """A value that is not plain data by exact type (or nests deeper than _MAX_DEPTH)."""


def encode(value, depth=0):
    """`value` as JSON-ready data: lists stay lists, other containers are tagged ({"tuple": [...]})."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth > _MAX_DEPTH:
        raise NotPlainData(f"data nested deeper than {_MAX_DEPTH}")
    depth += 1
    if kind is list:
        return [encode(item, depth) for item in value]
    if kind is tuple or kind is set or kind is frozenset:
        return {kind.__name__: [encode(item, depth) for item in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth), encode(v, depth)] for k, v in value.items()]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    raise NotPlainData(f"a {kind.__module__}.{kind.__qualname__} is not plain data")


def decode(data):
    """The inverse of encode, accepting nothing else: every value it returns is of an exact built-in type."""
    kind = type(data)
    if kind in _SCALARS:
        return data
    if kind is list:
        return [decode(item) for item in data]
    if kind is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
        if type(body) is list:
            if tag == "tuple":
                return tuple(decode(item) for item in body)
            if tag == "set":
                return {decode(item) for item in body}
            if tag == "frozenset":
                return frozenset(decode(item) for item in body)
            if tag == "dict" and all(type(pair) is list and len(pair) == 2 for pair in body):
                return {decode(k): decode(v) for k, v in body}
            if tag == "complex" and len(body) == 2 and all(type(part) in (int, float) for part in body):
                return complex(body[0], body[1])
    raise NotPlainData(f"malformed data: {str(data)[:80]}")


def send(fd, message, dumps):
    data = dumps(message, separators=(",", ":")).encode()
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os.write(fd, data) :]


def receive(fd, loads):
    def read_exact(count):
        chunks = []
        while count:
            chunk = os.read(fd, min(count, 1 << 20))
            if not chunk:
                raise EOFError("the other process ended")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    size = int.from_bytes(read_exact(8), "big")
    if size > _MAX_FRAME:
        raise NotPlainData(f"a message of {size} bytes")
    return loads(read_exact(size))


def _main(settings_text):
    import ast
    import builtins
    import json
    import resource
    import sysconfig

    settings = ast.literal_eval(settings_text)
    here = os.path.dirname(os.path.abspath(__file__))
    write, exit_now, realpath, fsdecode = os.write, os._exit, os.path.realpath, os.fsdecode
    mode = settings["mode"]
    sys.set_int_max_str_digits(0)  # a big int is plain data; the time limit bounds what converting it costs
    token = b""
    tests = None
    if mode == "tests":
        # The parent writes exactly one line (the token) and closes the pipe: read it all first.
        while True:
            chunk = os.read(0, 256)
            if not chunk:
                break
            token += chunk
        token = token.strip()
        with open(os.path.join(here, "tests.py"), encoding="utf-8") as f:
            tests = compile(f.read(), "tests.py", "exec")
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

    if mode == "program":
        import runpy

        runpy.run_path(os.path.join(here, "solution.py"), run_name="__main__")
    elif mode == "solution":
        _serve_solution(here, settings["fds"], json.dumps, json.loads)
    else:
        _run_tests(tests, token, settings["fds"], builtins, stdout, write, exit_now, json.dumps, json.loads)


def _serve_solution(here, fds, dumps, loads):
    """Import the solution, send its names, answer calls until the tests' process says "end" or goes."""
    import importlib.util
    import types

    requests, replies = fds
    spec = importlib.util.spec_from_file_location("solution", os.path.join(here, "solution.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["solution"] = module
    spec.loader.exec_module(module)
    names = []
    for name, value in list(vars(module).items()):
        if name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            names.append([name, "module", value.__name__])
        elif callable(value):
            names.append([name, "function", None])
        else:
            try:
                names.append([name, "value", encode(value)])
            except NotPlainData:
                pass  # not plain data: the tests do not see it
    _flush()
    send(replies, ["names", names], dumps)
    while True:
        try:
            request = receive(requests, loads)
        except EOFError:
            return
        if request == ["end"]:
            _flush()
            return
        _, name, args, kwargs = request
        try:
            result = vars(module)[name](*decode(args), **decode(kwargs))
            reply = ["return", encode(result)]
        except NotPlainData as error:
            reply = ["not plain data", str(error)]
        except Exception as error:  # noqa: BLE001 - the solution's exception is an answer; the tests may expect it
            builtin = next(c for c in type(error).__mro__ if c.__module__ == "builtins")
            try:
                reply = ["raise", builtin.__name__, encode(error.args)]
            except NotPlainData as not_plain:
                reply = ["not plain data", f"the args of {type(error).__name__}: {not_plain}"]
        _flush()
        send(replies, reply, dumps)


def _flush():
    try:
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001 - a broken stdout of the solution's making is not the harness's problem
        pass


def _run_tests(tests, token, fds, builtins, stdout, write, exit_now, dumps, loads):
    """Run the tests over proxies of the solution's functions; print the token after the last one."""
    import importlib

    to_solution, from_solution = fds
    builtin_names = frozenset(vars(builtins))
    exceptions = {name: value for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, Exception)}

    def fail(why):
        # Not an exception the tests could catch: the run ends here, without the token.
        try:
            write(2, ("\nsandbox: " + why + "\n").encode(errors="replace"))
        finally:
            exit_now(3)

    def ask(message):
        try:
            send(to_solution, message, dumps)
            return receive(from_solution, loads)
        except (EOFError, OSError):
            fail("the solution's process ended before the tests did (exit, crash or limit)")
        except (NotPlainData, ValueError, TypeError, RecursionError) as error:
            fail(f"malformed answer from the solution's process ({error})")

    def proxy(name):
        def call(*args, **kwargs):
            try:
                request = ["call", name, encode(list(args)), encode(kwargs)]
            except NotPlainData as error:
                raise TypeError(f"sandbox: the tests passed {name}() something other than plain data: {error}") from None
            reply = ask(request)
            try:
                if reply[0] == "return" and len(reply) == 2:
                    return decode(reply[1])
                if reply[0] == "raise" and len(reply) == 3 and reply[1] in exceptions:
                    cls, args = exceptions[reply[1]], decode(reply[2])
                    if type(args) is not tuple:
                        raise NotPlainData("exception args are not a tuple")
                else:
                    fail(f"{name}() returned something other than plain data: {reply[1] if reply[0] == 'not plain data' else 'a malformed answer'}")
            except (NotPlainData, ValueError, TypeError, RecursionError, IndexError) as error:
                fail(f"malformed answer from {name}() ({error})")
            try:
                error = cls(*args)
            except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError needs five args: keep the class, set args
                error = cls.__new__(cls)
                error.args = args
            raise error

        call.__name__ = call.__qualname__ = name
        return call

    try:  # the solution's process sends its names unasked, once it has imported the solution
        reply = receive(from_solution, loads)
    except EOFError:
        fail("the solution did not import (exit, crash, limit or an exception; see its stderr)")
    except (NotPlainData, ValueError, TypeError, RecursionError) as error:
        fail(f"malformed list of names from the solution's process ({error})")
    namespace = {"__name__": "__tests__", "__builtins__": builtins}
    entries = reply[1] if type(reply) is list and len(reply) == 2 and reply[0] == "names" and type(reply[1]) is list else []
    for entry in entries:
        if type(entry) is not list or len(entry) != 3 or type(entry[0]) is not str:
            continue
        name, kind, payload = entry
        # Solution names never shadow a builtin the tests use (sorted, len, isinstance, ...).
        if not name.isidentifier() or name.startswith("__") or name in builtin_names:
            continue
        if kind == "function":
            namespace[name] = proxy(name)
        elif kind == "module" and type(payload) is str and payload.partition(".")[0] in sys.stdlib_module_names:
            try:
                namespace[name] = importlib.import_module(payload)  # this interpreter's own, untouched copy
            except Exception:  # noqa: BLE001 - a module the guard refuses: the tests do without it
                pass
        elif kind == "value":
            try:
                namespace[name] = decode(payload)
            except (NotPlainData, ValueError, TypeError, RecursionError) as error:
                fail(f"malformed value of {name} ({error})")
    exec(tests, namespace)
    # Reached only when every test ran and none raised.
    try:
        send(to_solution, ["end"], dumps)
    except OSError:
        pass
    try:
        stdout.flush()
    except BaseException:  # noqa: BLE001 - a broken stdout of the tests' making must not stop the verdict
        pass
    write(1, b"\n" + token + b"\n")
    exit_now(0)


if __name__ == "__main__":
    _main(sys.argv[1])
