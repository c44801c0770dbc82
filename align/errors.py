"""User-facing errors: bad input is reported as one line, without a traceback, and the exit status.

The bottom layer: every error a user can cause subclasses `UserError` where it is raised, so the
command line catches them all without importing (or even knowing) the layers that raise them.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager


class UserError(Exception):
    """An error whose message alone (one line) tells the user what to fix."""

    label = "error: "  # printed after "align: "
    exit_status = 2


class RunStopped(UserError):
    """The run stopped on a signal (SIGTERM, SIGINT) after saving: not an error, but one line and
    the shell's status for that signal (128 + its number), so a scheduler sees what happened."""

    label = ""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


@contextmanager
def exit_on_user_error():
    try:
        yield
    except UserError as err:
        print(f"align: {err.label}{err}", file=sys.stderr)
        end_launched_process(err.exit_status)
        sys.exit(err.exit_status)


def end_launched_process(status: int = 0) -> None:
    """End a process of a multi-process launch that has finished (or stopped): flush, then os._exit(status).

    After accelerate's end_training() has destroyed the process groups, the objects DeepSpeed and
    accelerate still reference keep their gloo threads alive (measured: 4 pt_gloo_runloop and 2
    gloo_tcp_loop threads per rank), and they are torn down with the interpreter. There a rank
    aborted now and then ("terminate called without an active exception", SIGABRT: 1 run in about
    70 of a 2-process ZeRO-3 run under load here, and in CI), failing a run whose model, checkpoints and
    logs were all written, or turning a one-line error's status into -6. Nothing is left to do by
    then, so the teardown is skipped. A single process (WORLD_SIZE unset or 1) returns: it exits normally.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
