"""User-facing errors: bad input is reported as one line, without a traceback.

The bottom layer: every error a user can cause subclasses `UserError` where it is raised, so the
command line catches them all without importing (or even knowing) the layers that raise them.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager


class UserError(Exception):
    """An error whose message alone (one line) tells the user what to fix."""


@contextmanager
def exit_on_user_error():
    try:
        yield
    except UserError as err:
        print(f"align: error: {err}", file=sys.stderr)
        sys.exit(2)
