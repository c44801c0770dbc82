"""The algorithm registry: `algo=NAME` -> the class that implements it and its config section.

One table replaces string choice lists and if-chains: the config validates `algo` against it,
`train.py`, `eval.py` and `explain.py` build the algorithm through it. Classes are imported on
demand (by "module:Class" path), so reading the table costs nothing. To add an algorithm, add a
line here (CONTRIBUTING.md walks through one).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class AlgorithmEntry:
    target: str  # "module:Class"
    section: str  # the config section holding its hyper-parameters (documented in align/config.py)
    offline: bool = False  # can train from fixed rows (rollout.source=offline): no importance ratio to pi_old
    summary: str = ""


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "grpo": AlgorithmEntry("align.trainers.grpo:GRPO", "loss", summary="group-normalised advantages, clipped surrogate (+ KL)"),
    "gcpo": AlgorithmEntry("align.trainers.gcpo:GCPO", "gcpo", summary="GRPO with a group-contrastive aux-construction reward"),
    "grao": AlgorithmEntry("align.trainers.grao:GRAO", "grao", summary="reference-answer judge, explore + imitate + regularise"),
    "copg": AlgorithmEntry("align.trainers.copg:CoPG", "copg", offline=True,
                           summary="contrastive pairwise squared loss on KL-regularised sequence rewards"),
    "salt": AlgorithmEntry("align.trainers.salt:SALT", "salt",
                           summary="agents: step advantages from the trajectory graph of each task's G episodes"),
}


class UnknownAlgorithmError(ValueError):
    """`algo=NAME` that is not registered; the message lists the registered names."""


def registered() -> list[str]:
    return sorted(ALGORITHMS)


def algorithm_entry(name: str) -> AlgorithmEntry:
    if name not in ALGORITHMS:
        raise UnknownAlgorithmError(f"unknown algo '{name}'; registered algorithms: {', '.join(registered())}")
    return ALGORITHMS[name]


def algorithm_class(name: str) -> type:
    """The class for `algo=name`, imported on first use."""
    module, _, cls = algorithm_entry(name).target.partition(":")
    return getattr(importlib.import_module(module), cls)
