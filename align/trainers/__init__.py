"""Trainers: one loop (base.py), the algorithm registry (registry.py) and thin algorithm classes
that plug into the loop (grpo.py, gcpo.py, grao.py, copg.py)."""

from align.trainers.registry import ALGORITHMS, algorithm_class, registered

__all__ = ["ALGORITHMS", "algorithm_class", "registered"]
