"""What an algorithm is to the loop: what it needs, its config section, and four methods.

The loop (`align/training/loop.py`) asks an algorithm's `needs` which phases to run, and calls

    score(prompts, completions, columns, completion_ids, group_size) -> Scores   rewards [P,G]
    batch_metrics(scores) -> {name: value}                            reward statistics to log
    advantages(rewards, valid, answer_rewards) -> Advantages          over the GLOBAL batch
    loss(micro_batch) -> (loss, metrics)                              one MicroBatch, additive share

Everything else (rollouts, reward shaping, micro-batching, forward passes, backward, clipping,
optimizer, weight sync, metrics, checkpoints) is written once, in the loop. The maths of each
method lives in `align.algos`; an algorithm class only wires config values into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from align.algos import MicroBatch
from align.config import AlgorithmSection, Config, ConfigError


@dataclass(frozen=True)
class Needs:
    """The phases of a step an algorithm uses; the loop runs only those.

    reference_model: log-probs of the completions under the frozen starting policy (a KL term,
        CoPG's regularised reward). False = no reference model is even loaded.
    reference_answer: the dataset's reference answer y, tokenized and forwarded with grad next to
        the completions of its prompt (GRAO's imitation term).
    whole_groups: every micro-batch holds whole groups, because the loss couples the members of a
        group (CoPG's pairwise loss, GRAO's per-prompt y term).
    token_advantages: advantages differ per token (SALT's step advantages) instead of one per completion;
        the algorithm then has a `token_advantages(batch) -> (batch, metrics)` method (algorithms/salt.py).
    importance_correction: the loss has an importance ratio to pi_old; the loop computes pi_old
        (a separate pass when the batch is reused) and truncated importance-sampling weights
        against the engine's log-probs. False: no pi_old pass, no TIS.
    weight_sync: the engine samples from the current policy, so its weights follow every step.
        False for offline sources (no engine during training at all).
    weighted_when_stale: the loss has no importance ratio, but under rollout.max_staleness >= 1 its
        terms over sampled tokens take the truncated weight min(pi_current / mu, loss.tis_cap)
        (GRAO; ALGORITHMS.md section 9). At k = 0 nothing changes.
    """

    reference_model: bool = False
    reference_answer: bool = False
    whole_groups: bool = False
    token_advantages: bool = False
    importance_correction: bool = True
    weight_sync: bool = True
    weighted_when_stale: bool = False


@dataclass
class Scores:
    """What `score` returns for P prompts x G completions."""

    rewards: torch.Tensor  # [P, G] float32, the scalar reward the advantages are computed from
    valid: torch.Tensor  # [P, G] bool: False where no reward function applied (advantage 0)
    components: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [P, G] (nan = None)
    # what reward functions sent through log_metric(name, value), averaged per name: "reward/<name>/<key>"
    logged: dict[str, float] = field(default_factory=dict)


@dataclass
class Advantages:
    """What `advantages` returns, over the global batch.

    completions [P,G] (or [P,G,T] lists later for token advantages); answers [P] for algorithms
    with a reference answer (GRAO), else None.
    """

    completions: torch.Tensor
    answers: torch.Tensor | None = None


# Loss metrics that are this shard's additive share of a global quantity (summed over micro-batches
# and ranks); every other loss metric is a mean over the shard's tokens (token-weighted average).
ADDITIVE_METRICS = frozenset({"loss", "pg_loss", "num_tokens", "entropy_bonus"})


class Algorithm:
    """The base class of every algorithm, built-in or a user's own (`algo=path/to/file.py:Class`).

    Class attributes say what the config and the loop need to know before an instance exists:

    name: the algorithm's name in logs and errors.
    section / config_class: its config section (`gcpo.eps=...` in recipes and overrides) and the
        dataclass of its options, available as `cfg.<section>`. A class outside the package without a
        config_class gets a free-form `algo_options` mapping (`algo_options.my_key=1`, `cfg.algo_options`).
    sources: the rollout sources (`rollout.source`) it trains from.
    additive_metrics / signals: how its loss metrics combine over micro-batches and ranks, and which
        of them the reports show (align.telemetry.report.Signal).

    An instance has `needs` (a `Needs`), `reward_functions`, and the four methods the loop calls.
    """

    name: ClassVar[str] = ""
    section: ClassVar[str | None] = None
    config_class: ClassVar[type | None] = None
    sources: ClassVar[tuple[str, ...]] = ("generate",)
    # loss-section options its loss and advantages never read: a run that sets one is told so (config/inert.py)
    unread_loss_options: ClassVar[tuple[str, ...]] = ()
    additive_metrics: ClassVar[frozenset[str]] = ADDITIVE_METRICS
    signals: tuple = ()
    needs: Needs
    reward_functions: list

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @classmethod
    def config_section(cls) -> AlgorithmSection | None:
        """The section this class adds to the run's config (None: none)."""
        if cls.config_class is not None:
            return AlgorithmSection(cls.section or "algo_options", cls.config_class)
        return AlgorithmSection(cls.section, None) if cls.section else None

    @classmethod
    def validate(cls, cfg: Config) -> None:
        """One-line ConfigErrors for combinations this algorithm cannot run; subclasses add theirs
        (and call super()). The checks every algorithm shares ran before (align.config.validate_common)."""
        if cfg.rollout.source not in cls.sources:
            raise ConfigError(f"rollout.source={cfg.rollout.source} does not train algo={cfg.algo}; "
                              f"it trains from rollout.source={' or '.join(cls.sources)}")

    def score(self, prompts, completions, columns, completion_ids, group_size: int, trainer_state=None) -> Scores:
        raise NotImplementedError(f"{type(self).__name__}.score")

    def batch_metrics(self, scores: Scores) -> dict[str, float]:
        return {}

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor, answer_rewards: torch.Tensor | None = None) -> Advantages:
        raise NotImplementedError(f"{type(self).__name__}.advantages")

    def loss(self, mb: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError(f"{type(self).__name__}.loss")

