"""A reward worker process (started by rewards/workers.py as `python -m rewards._reward_worker`).

Protocol on stdin/stdout, each message a 4-byte big-endian length and a pickle:
  parent -> worker: (fn, args)          fn is pickled by reference (its module is imported here)
  worker -> parent: ("started",)        after unpickling, so an import is not billed to the item's time limit
  worker -> parent: ("ok", value) | ("error", "TypeName: message")
The worker is a plain interpreter: it never imports the parent's __main__ (multiprocessing's spawn would,
and a script without an `if __name__ == "__main__":` guard then hangs).
"""

import os
import pickle
import struct
import sys


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _send(fd: int, message) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(fd, struct.pack(">I", len(payload)) + payload)


def _die_with_parent() -> None:
    # A worker stuck in C (the reason it exists) must not outlive a trainer that was killed.
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl
            sys.exit(0)


def main() -> None:
    _die_with_parent()
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group; the trainer saves and stops
    # after its step (align/runtime/stop.py) and needs its workers until then. They end with it
    # (PR_SET_PDEATHSIG) or by the SIGKILL it sends.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox, outbox = sys.stdin.fileno(), sys.stdout.fileno()
    # Anything the scored code prints must not corrupt the protocol: stdout goes to stderr from here on.
    outbox = os.dup(outbox)
    os.dup2(sys.stderr.fileno(), 1)
    while True:
        try:
            (size,) = struct.unpack(">I", _read_exactly(inbox, 4))
            fn, args = pickle.loads(_read_exactly(inbox, size))
        except EOFError:
            return
        _send(outbox, ("started",))
        try:
            _send(outbox, ("ok", fn(*args)))
        except Exception as error:  # noqa: BLE001 - reported to the parent, which re-raises it
            _send(outbox, ("error", f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"))


if __name__ == "__main__":
    main()
