"""Sampling seeds derived by hashing, so no two prompts of a run ever share a random stream.

Engines sample completion j of a request seeded s with seed s + j. Seeds built by adding small
offsets (base + 31 * rank + round) therefore overlapped as soon as a rank held more than a few
prompts: different prompts got identical random draws, which correlates their samples. A hash of
the parts that identify a request spreads requests over the whole 31-bit range instead.
"""

from __future__ import annotations

import hashlib

SEED_RANGE = 2**31


def derived_seed(*parts: int) -> int:
    """A seed in [0, 2**31) determined by `parts` alone (stable across processes and Python runs)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % SEED_RANGE
