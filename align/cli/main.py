"""`python -m align train|eval|explain|sample key=value ...`, `python -m align serve --model M` and
`python -m align launch [accelerate launch flags] align/train.py ...` (also installed as the `align` command)."""

from __future__ import annotations

import sys

from align.cli import eval as evaluate
from align.cli import explain, launch, sample, serve, train
from align.cli.usage import USAGE, full_help, help_section, wants_help
from align.errors import end_launched_process, exit_on_user_error

COMMANDS = {"train": train.main, "eval": evaluate.main, "sample": sample.main, "explain": lambda argv: print(explain.main(argv)),
            "serve": serve.main}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # its own flags (argparse), passed through to vLLM
        with exit_on_user_error():
            serve.main(argv[1:])
        return
    if argv[:1] == ["launch"]:  # accelerate launch's own flags; the launched script reports its errors itself
        launch.main(argv[1:])
        return
    if wants_help(argv):
        with exit_on_user_error():
            print(full_help(help_section(argv), argv))
        return
    if not argv or argv[0] not in COMMANDS:
        print(USAGE + "\n\n`python -m align --help` lists the recipes and every key.", file=sys.stderr)
        sys.exit(2)
    with exit_on_user_error():
        COMMANDS[argv[0]](argv[1:])
    end_launched_process()  # a rank of a multi-process launch skips the interpreter's teardown
