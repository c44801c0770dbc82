"""Stop a run cleanly on SIGTERM (what a cluster sends before preemption) or SIGINT (Ctrl-C).

The handler only records the signal; the loop looks at it after each step, saves a checkpoint and
raises RunStopped, so `resume=latest` continues from there. A second SIGINT interrupts at once.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    """Context manager: `signum` is the first SIGTERM/SIGINT received inside it (0 while none)."""

    def __init__(self):
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _record(self, signum, frame) -> None:
        self.signum = self.signum or signum
        if signum == signal.SIGINT:  # the next Ctrl-C is not deferred
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread only
            self._previous = {s: signal.signal(s, self._record) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
