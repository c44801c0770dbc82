"""`python -m align train|eval|explain|sample key=value ...` (also installed as the `align` command)."""

from align.cli.main import main

if __name__ == "__main__":
    main()
