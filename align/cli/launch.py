"""`align launch [accelerate launch flags] align/train.py recipe=NAME key=value ...`: `accelerate launch`, ending as align does.

Why not `accelerate launch` itself: it runs the script in child processes and turns any non-zero
exit into a traceback of its own (one process: `subprocess.CalledProcessError`; several: torch
elastic's `ChildFailedError` after its log lines) and exit status 1. Nothing the child does can
change that, so a one-line error (status 2) came with 20 lines of launcher traceback after it.
`accelerate launch --quiet` helps only for one process and DeepSpeed over pdsh, and still exits 1.

Here accelerate's own parser and `launch_command` run in this process: every flag and config file
is the same, and a failure ends with the child's exit status and no launcher traceback. The
trade-off: a rank that ended with anything but a one-line error (status 2) still gets torch
elastic's summary (which rank, which status, when), printed once, but not the launcher's Python
frames, which only say where accelerate raised.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

# Status 2 is align's one-line error (align.errors.UserError): the rank has already said what to fix.
ONE_LINE_ERROR_STATUS = 2


def main(argv: list[str]) -> None:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # torch elastic logs "Sending process N closing signal SIGTERM" / "failed (exitcode: 2)" when a rank
    # fails: after a one-line error that is noise, and for any other failure the summary below says it.
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    args = launch_command_parser().parse_args(argv)
    try:
        launch_command(args)
    except subprocess.CalledProcessError as failed:  # one process: its own stderr said what happened
        end_as_the_child(failed.returncode)
    except ChildFailedError as failed:  # several processes (DDP, DeepSpeed, FSDP through torch elastic)
        _, root_cause = failed.get_first_failure()
        if root_cause.exitcode != ONE_LINE_ERROR_STATUS:
            print(failed.format_msg(), file=sys.stderr)  # which rank, which status, when
        end_as_the_child(root_cause.exitcode)


def end_as_the_child(status: int) -> None:
    """Exit with the failed child's status; one killed by a signal (negative) could say nothing itself:
    the one line below, and the shell's status for a signal, 128 + N."""
    if status < 0:
        print(killed_by_signal(-status), file=sys.stderr)
        sys.exit(128 - status)
    sys.exit(status or 1)


def killed_by_signal(signum: int) -> str:
    """The one line for a training process a signal ended (a crash in native code: SIGSEGV, SIGABRT, ...; or kill -9)."""
    try:
        name = signal.Signals(signum).name
    except ValueError:  # a real-time signal has no name
        name = f"signal {signum}"
    return (f"align: error: the training process was killed by {name}; a crash in native code (a reward function's "
            "or an extension's: the Python stack above names it) or the system (kill -9, out of memory); "
            "resume=latest continues from the last checkpoint")
