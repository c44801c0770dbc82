"""`python -m align train|eval|explain|sample key=value ...` (also installed as the `align` command)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from align.errors import exit_on_user_error

    from align.usage import USAGE, full_help, help_section, wants_help

    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(full_help(help_section(argv)))
        return
    if not argv or argv[0] not in ("train", "eval", "explain", "sample"):
        print(USAGE + "\n\n`python -m align --help` lists the recipes and every key.", file=sys.stderr)
        sys.exit(2)
    command, rest = argv[0], argv[1:]
    with exit_on_user_error():
        if command == "train":
            from align.train import main as train

            train(rest)
        elif command == "eval":
            from align.eval import main as evaluate

            evaluate(rest)
        elif command == "sample":
            from align.sample import main as sample

            sample(rest)
        else:
            from align.explain import main as explain

            print(explain(rest))


if __name__ == "__main__":
    main()
