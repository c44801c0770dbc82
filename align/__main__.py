"""`python -m align train|eval|explain|sample key=value ...` (also installed as the `align` command)."""

from __future__ import annotations

import sys

USAGE = "usage: python -m align {train,eval,explain,sample} [recipe=NAME] [key=value ...] (sample: --out FILE [--prompts N])"


def main(argv: list[str] | None = None) -> None:
    from align.errors import exit_on_user_error

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("train", "eval", "explain", "sample"):
        print(USAGE, file=sys.stderr)
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
