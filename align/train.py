"""Entry point: `align launch align/train.py recipe=NAME key=value ...` (or `accelerate launch`, which adds its own traceback to any error; align/cli/train.py does the work)."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root, not align/, must be importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from align.cli.train import main  # noqa: E402
from align.errors import end_launched_process, exit_on_user_error  # noqa: E402

if __name__ == "__main__":
    with exit_on_user_error():
        main()
    end_launched_process()  # a rank of a multi-process launch skips the interpreter's teardown
