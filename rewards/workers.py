"""Score untrusted text in worker processes that are killed when one item runs past its time limit.

Parsing model output can run away: math-verify hands `9^{9^{9^{9}}}` to sympy, which computes the power
in C while holding the GIL, so no thread, signal or `asyncio` timeout in the training process can stop it.
A worker process can always be killed. `score_each` sends one item at a time to each of a few persistent
workers (reused across calls: imports are paid once per worker, not per completion); an item past
`timeout_s` has its worker killed and replaced, and scores None ("not applicable"), counted in
`timeouts()` (the trainer logs it as `reward/timeouts`). A worker that dies (out of memory, a crash in a
parser) likewise scores None and is counted in `crashes()`.

Workers are plain interpreters (`python -m rewards._reward_worker`, see there for the protocol), not
multiprocessing children: those re-import the caller's `__main__`, which hangs a script that lacks an
`if __name__ == "__main__":` guard, and forking a trainer that holds CUDA contexts and threads is unsafe.
ALIGN_REWARD_WORKERS sets their number (default 2).
"""

from __future__ import annotations

import atexit
import builtins
import os
import pickle
import queue
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

# Importing the scorer's module happens after the item is sent and before its clock starts; bounded too.
_IMPORT_LIMIT_S = 120.0

_lock = threading.Lock()
_idle: list[_Worker] = []
_counts = {"timeouts": 0, "crashes": 0}


def worker_count() -> int:
    value = os.environ.get("ALIGN_REWARD_WORKERS", "2")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"ALIGN_REWARD_WORKERS={value!r} must be a whole number >= 1")
    return int(value)


_spawn_requests: queue.SimpleQueue = queue.SimpleQueue()
_spawner: threading.Thread | None = None


def _spawn_forever() -> None:
    # Workers set PR_SET_PDEATHSIG, which fires when the THREAD that started them ends, not the process; the
    # reward runner calls us from short-lived threads, so one thread that lives as long as the process starts them.
    while True:
        reply: queue.SimpleQueue = _spawn_requests.get()
        try:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            # Unbuffered: the selector watches the pipe itself, so no message may wait in a Python-side buffer.
            reply.put(subprocess.Popen([sys.executable, "-m", "rewards._reward_worker"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=env, bufsize=0))  # fmt: skip
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            reply.put(error)


def _start_process() -> subprocess.Popen:
    global _spawner
    if _spawner is None:
        _spawner = threading.Thread(target=_spawn_forever, name="reward-worker-spawner", daemon=True)
        _spawner.start()
    reply: queue.SimpleQueue = queue.SimpleQueue()
    _spawn_requests.put(reply)
    result = reply.get()
    if isinstance(result, BaseException):
        raise result
    return result


class _Worker:
    def __init__(self) -> None:
        self.process = _start_process()

    def send(self, fn: Callable, args: tuple) -> None:
        payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        data = memoryview(struct.pack(">I", len(payload)) + payload)
        while data:
            data = data[os.write(self.process.stdin.fileno(), data) :]

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = os.read(self.process.stdout.fileno(), size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def receive(self) -> tuple:
        """One message; EOFError when the worker died."""
        (size,) = struct.unpack(">I", self._read(4))
        return pickle.loads(self._read(size))

    def kill(self) -> None:
        try:
            self.process.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def shutdown() -> None:
    """Stop the idle workers (also done at exit); the next `score_each` starts new ones."""
    with _lock:
        while _idle:
            _idle.pop().kill()


atexit.register(shutdown)


def score_each(fn: Callable[..., Any], items: Sequence[tuple], timeout_s: float) -> list[Any | None]:
    """[fn(*item) for item in items], each in a worker process; None where an item timed out or its worker died.

    fn must be importable by name (a module-level function). An exception fn raises is re-raised here
    (same type for built-in exceptions): that is a bug in the reward, not a property of the text.
    """
    if not timeout_s > 0:
        raise ValueError(f"score_each: timeout_s must be > 0, got {timeout_s}")
    results: list[Any | None] = [None] * len(items)
    if not items:
        return results
    with _lock:  # one batch at a time: workers are shared by every reward function of this process
        pending = deque(enumerate(items))
        active: dict[_Worker, list] = {}  # worker -> [item index, deadline]
        wanted = min(worker_count(), len(items))
        try:
            with selectors.DefaultSelector() as selector:
                while pending or active:
                    while pending and len(active) < wanted:
                        worker = _idle.pop() if _idle else _Worker()
                        index, item = pending.popleft()
                        try:
                            worker.send(fn, tuple(item))
                        except BrokenPipeError:  # an idle worker that died meanwhile: use a fresh one
                            worker.kill()
                            worker = _Worker()
                            worker.send(fn, tuple(item))
                        active[worker] = [index, time.monotonic() + _IMPORT_LIMIT_S]
                        selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
                    wait = max(0.0, min(deadline for _, deadline in active.values()) - time.monotonic())
                    for key, _ in selector.select(wait):
                        worker = key.data
                        index = active[worker][0]
                        try:
                            message = worker.receive()
                        except EOFError:
                            _counts["crashes"] += 1
                            _retire(worker, active, selector)
                            continue
                        if message[0] == "started":
                            active[worker][1] = time.monotonic() + timeout_s
                            continue
                        selector.unregister(worker.process.stdout)
                        del active[worker]
                        _idle.append(worker)
                        if message[0] == "error":
                            raise _rebuild(message[1])
                        results[index] = message[1]
                    now = time.monotonic()
                    for worker, (index, deadline) in list(active.items()):
                        if now >= deadline:
                            _counts["timeouts"] += 1
                            _retire(worker, active, selector)
        finally:
            for worker in list(active):  # an error left items in flight: their answers must not reach the next call
                worker.kill()
    return results


def _retire(worker: _Worker, active: dict, selector: selectors.BaseSelector) -> None:
    selector.unregister(worker.process.stdout)
    del active[worker]
    worker.kill()


def _rebuild(text: str) -> Exception:
    name, _, message = text.partition(": ")
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(message)
    return RuntimeError(text)


def timeouts() -> int:
    """Items that ran past their limit since this process started."""
    return _counts["timeouts"]


def crashes() -> int:
    """Items whose worker died since this process started."""
    return _counts["crashes"]
