"""Trainers: one loop (base.py) and thin algorithm classes that plug into it (grpo.py, gcpo.py)."""


def algorithm_class(name: str):
    """The algorithm class for `algo=name` (imported on demand: the loop's helpers stay light)."""
    if name == "grpo":
        from align.trainers.grpo import GRPO

        return GRPO
    if name == "gcpo":
        from align.trainers.gcpo import GCPO

        return GCPO
    raise ValueError(f"unknown algorithm '{name}'; choose grpo or gcpo")
