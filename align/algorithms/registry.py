"""The algorithm registry: `algo=NAME` -> the class that implements it.

One table replaces string choice lists and if-chains: the config loader asks it which section an
`algo=` value brings, `validate` runs the class's own checks, and `train`, `eval`, `explain` and
the bench scripts build the algorithm through `algorithm_class`. `algo=` also takes a class of the
user's own, "path/to/file.py:Class" or "package.module:Class", that subclasses `Algorithm` (in
practice `GRPO`). To add one to the package, add a line here (CONTRIBUTING.md walks through one).
"""

from __future__ import annotations

from dataclasses import dataclass

from align.algorithms.base import Algorithm
from align.algorithms.copg import CoPG
from align.algorithms.gcpo import GCPO
from align.algorithms.grao import GRAO
from align.algorithms.grpo import GRPO
from align.algorithms.salt import SALT
from align.config import AlgorithmSection, Config, ConfigError, validate_common
from align.config import load_config as load_config_with
from align.config.plugins import import_object


@dataclass(frozen=True)
class AlgorithmEntry:
    cls: type[Algorithm]
    summary: str = ""


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "grpo": AlgorithmEntry(GRPO, "group-normalised advantages, clipped surrogate (+ KL)"),
    "gcpo": AlgorithmEntry(GCPO, "GRPO with a group-contrastive aux-construction reward"),
    "grao": AlgorithmEntry(GRAO, "reference-answer judge, explore + imitate + regularise"),
    "copg": AlgorithmEntry(CoPG, "contrastive pairwise squared loss on KL-regularised sequence rewards"),
    "salt": AlgorithmEntry(SALT, "agents: step advantages from the trajectory graph of each task's G episodes"),
}


LABELS = {"episodes": " (agents)"}  # what a rollout source is, in errors


class UnknownAlgorithmError(ConfigError):
    """`algo=NAME` that is not registered and not a class spec; the message lists the registered names."""


def registered() -> list[str]:
    return sorted(ALGORITHMS)


def is_plugin(name: str) -> bool:
    """`algo=` names a class by where it lives rather than a registered name."""
    return ":" in name


def algorithm_class(name: str) -> type[Algorithm]:
    """The class for `algo=name`: a registered name, or a user's class by "file.py:Class" / "module:Class"."""
    if is_plugin(name):
        cls = import_object(name, "algo", ConfigError)
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise ConfigError(f"algo={name!r} is not a subclass of align.Algorithm; subclass align.GRPO (or align.Algorithm) "
                              "and override what differs")
        return cls
    if name not in ALGORITHMS:
        raise UnknownAlgorithmError(f"unknown algo '{name}'; registered algorithms: {', '.join(registered())}, "
                                    "or your own class as algo=path/to/file.py:Class")
    return ALGORITHMS[name].cls


def summary(name: str) -> str:
    """One line on `algo=name`: the registry's, or a plug-in's docstring's first line."""
    if name in ALGORITHMS:
        return ALGORITHMS[name].summary
    doc = (algorithm_class(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else "an algorithm from outside the package"


class Registry:
    """The `AlgorithmCatalog` the config layer asks (align.config.load)."""

    def section(self, algo: str) -> AlgorithmSection | None:
        cls = algorithm_class(algo)
        section = cls.config_section()
        if section is None and is_plugin(algo):  # a plug-in without a config dataclass takes free-form options
            return AlgorithmSection("algo_options", None)
        return section

    def section_owner(self, name: str) -> str | None:
        return next((algo for algo, entry in ALGORITHMS.items() if entry.cls.section == name), None)


REGISTRY = Registry()


def load_config(argv: list[str], world_size: int = 1) -> Config:
    """The run's config from `recipe=NAME key=value ...`, with the algorithm's own section, validated."""
    cfg = load_config_with(argv, REGISTRY)
    validate(cfg, world_size)
    return cfg


def validate(cfg: Config, world_size: int = 1) -> None:
    """Every check: the ones all algorithms share, then the algorithm's own (`validate(cfg)`)."""
    cls = algorithm_class(cfg.algo)
    validate_common(cfg, world_size)
    source = cfg.rollout.source
    if source not in cls.sources and source != "generate":  # name the algorithms that can (generate: the class says)
        # those made for this source alone first (SALT for episodes), then the others
        able = sorted((len(e.cls.sources) > 1, name) for name, e in ALGORITHMS.items() if source in e.cls.sources)
        names = [name for _, name in able]
        if source == "offline":
            raise ConfigError(f"rollout.source=offline needs an algorithm that trains from fixed rows ({', '.join(names)}), "
                              f"not algo={cfg.algo}")
        raise ConfigError(f"rollout.source={source}{LABELS.get(source, '')} trains with {' or '.join('algo=' + n for n in names)}, "
                          f"not algo={cfg.algo}")
    cls.validate(cfg)
