"""The training layer: the loop (loop.py), checkpoints, held-out evaluation and resume checks."""
