"""What an algorithm is to the loop: what it needs, and four methods.

The loop (`base.py`) asks an algorithm's `needs` which phases to run, and calls

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

import torch


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
        the algorithm then has a `token_advantages(batch) -> (batch, metrics)` method (trainers/salt.py).
    importance_correction: the loss has an importance ratio to pi_old; the loop computes pi_old
        (a separate pass when the batch is reused) and truncated importance-sampling weights
        against the engine's log-probs. False: no pi_old pass, no TIS.
    weight_sync: the engine samples from the current policy, so its weights follow every step.
        False for offline sources (no engine during training at all).
    """

    reference_model: bool = False
    reference_answer: bool = False
    whole_groups: bool = False
    token_advantages: bool = False
    importance_correction: bool = True
    weight_sync: bool = True


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
ADDITIVE_METRICS = frozenset({"loss", "pg_loss", "num_tokens"})
