"""Trainers: one loop (base.py) and thin algorithm classes that plug into it."""

from align.trainers.gcpo import GCPO
from align.trainers.grpo import GRPO

ALGORITHMS = {"grpo": GRPO, "gcpo": GCPO}

__all__ = ["ALGORITHMS", "GCPO", "GRPO"]
