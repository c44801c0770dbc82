"""The command line: train, eval, explain, sample and --help (main.py dispatches)."""
