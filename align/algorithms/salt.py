"""SALT (ALGORITHMS.md section 5): GRPO's loss with step-level advantages from the trajectory graph.

The episode source (sources/episodes.py) hands the loop G trajectories per task with their steps
(state_key, action_key) and the step of every token. SALT computes the base trajectory advantages
(`salt.base`: GRPO's normalised or RLOO's leave-one-out), then, per group, replaces each action's
advantage by the mean over the trajectories that traverse the same edge
(`align.algos.salt_step_advantages`) and spreads it onto the action's tokens (`steps_to_tokens`).
Observation tokens carry no loss (the source's token mask). The loss is GRPO's, per token.
Hyper-parameters: the `salt` config section; the surrogate's clip / KL / aggregation: `loss`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import torch

from align import algos
from align.algorithms.base import Advantages, Needs
from align.algorithms.grpo import GRPO
from align.algos import GroupBatch
from align.config import Config, ConfigError

BASES = {"grpo": "mean", "rloo": "loo"}


@dataclass
class SALTConfig:
    """SALT (ALGORITHMS.md section 5): each action step gets the mean advantage of the trajectories
    of its group that pass through the same graph edge (state, history, action)."""

    base: str = "grpo"  # trajectory advantages: grpo (mean/std-normalised) | rloo (leave-one-out, unscaled)
    history: int | None = 0  # node = state + last k (state, action) pairs; 0 = a graph, null = prefix tree
    dedup: bool = True  # a trajectory counts once per edge however often it revisits it


class SALT(GRPO):
    name = "salt"
    section = "salt"
    config_class = SALTConfig
    sources = ("episodes",)

    @classmethod
    def validate(cls, cfg: Config) -> None:
        if cfg.rollout.source != "episodes":
            raise ConfigError("algo=salt needs multi-turn episodes: set rollout.source=episodes and env.name (e.g. recipe=salt_grid)")
        super().validate(cfg)
        if cfg.salt.base not in BASES:
            raise ConfigError(f"'salt.base' is '{cfg.salt.base}'; choose one of {', '.join(BASES)}")
        if cfg.salt.history is not None and (not isinstance(cfg.salt.history, int) or cfg.salt.history < 0):
            raise ConfigError(f"salt.history={cfg.salt.history!r}: must be an int >= 0, or null for the whole prefix")

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.reward_functions = []  # the environment gives the rewards
        self.needs = Needs(reference_model=cfg.loss.beta > 0, token_advantages=True, importance_correction=True)

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor, answer_rewards: torch.Tensor | None = None) -> Advantages:
        """The base estimator's trajectory advantages A_i over the global batch [P,G]."""
        c, base = self.cfg.loss, self.cfg.salt.base
        scale = c.scale if base == "grpo" else "none"  # RLOO: r_i - mean of the others, unscaled
        return Advantages(algos.group_advantages(rewards, valid, baseline=BASES[base], scale=scale, ddof=c.ddof,
                                                 eps=c.adv_eps, small_group=c.small_group))

    def token_advantages(self, batch: GroupBatch) -> tuple[GroupBatch, dict[str, float]]:
        """Per-token step advantages for every completion of `batch` (advantages filled), and graph metrics."""
        if batch.steps is None or batch.step_ids is None:
            raise ValueError("algo=salt needs agent steps (GroupBatch.steps / step_ids); use rollout.source=episodes")
        s, G = self.cfg.salt, batch.group_size
        rows: list[list[float]] = []
        totals: dict[str, float] = defaultdict(float)
        for p in range(batch.num_prompts):
            members = range(p * G, (p + 1) * G)
            adv = batch.advantages[p].double()
            # Invalid members (no reward) have advantage 0 and stay out of the graph.
            steps = [batch.steps[r] if batch.valid[p, i] else [] for i, r in enumerate(members)]
            step_adv = algos.salt_step_advantages(adv, steps, history=s.history, dedup=s.dedup)
            width = max(len(batch.step_ids[r]) for r in members)
            ids = torch.full((G, width), -1, dtype=torch.long)
            for i, r in enumerate(members):
                row_ids = torch.tensor(batch.step_ids[r], dtype=torch.long)
                ids[i, : len(row_ids)] = torch.where(torch.tensor([bool(batch.valid[p, i])]), row_ids, -1)
            tokens = algos.steps_to_tokens(step_adv, ids)
            rows += [tokens[i, : len(batch.step_ids[r])].tolist() for i, r in enumerate(members)]
            for name, value in algos.salt_graph_stats(adv, steps, step_adv, history=s.history).items():
                totals[name] += value
        n = max(batch.num_prompts, 1)
        metrics = {
            "salt/nodes_per_group": totals["nodes"] / n,
            "salt/edges_per_group": totals["edges"] / n,
            "salt/steps_per_group": totals["steps"] / n,
            "salt/merged_steps_per_group": totals["merged_steps"] / n,
            "salt/merged_step_frac": totals["merged_steps"] / max(totals["steps"], 1.0),
            "salt/sign_flip_frac": totals["sign_flips"] / max(totals["signed_steps"], 1.0),
        }
        return replace(batch, token_advantages=rows), metrics
