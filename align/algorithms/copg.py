"""CoPG: the pairwise squared loss on KL-regularised sequence rewards (ALGORITHMS.md section 4).

Rb(y) = R(y) - beta * (log pi(y) - log pi_ref(y)) with SEQUENCE log-probs; the loss over a group
of k completions of one prompt is 1/(k-1) * sum_{i<j} (Rb_i - Rb_j)^2. It needs no importance
ratio, so it trains on-policy (rollout.source=generate) and from fixed rows (rollout.source=offline:
no generation, no weight sync). Needs: the reference model, whole groups per micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from align import algos
from align.algorithms.base import ADDITIVE_METRICS, Advantages, Needs
from align.algorithms.grpo import GRPO
from align.config import Config, ConfigError
from rewards.runner import load_reward_functions


@dataclass
class CoPGConfig:
    """CoPG (ALGORITHMS.md section 4): pairwise squared loss on Rb = R - beta * log(pi / pi_ref)."""

    beta: float = 0.1  # KL strength in the regularised sequence reward; must be > 0 (0 = no gradient)


class CoPG(GRPO):
    name = "copg"
    section = "copg"
    config_class = CoPGConfig
    policy_gradient_loss = False
    sources = ("generate", "offline")  # no importance ratio to pi_old: it can train from fixed rows
    # its own advantages (grao.* / centred rewards) and loss: GRPO's advantage, KL and aggregation keys do nothing
    unread_loss_options = ("baseline", "scale", "ddof", "adv_eps", "small_group", "beta", "kl_kind", "kl_clamp", "agg")

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        if cfg.copg.beta <= 0:
            raise ConfigError(f"copg.beta={cfg.copg.beta}: must be > 0 (with 0 the CoPG loss has no gradient)")
    # Its means are shares of the step's valid completions (copg_loss gets the global count), so they
    # add up over micro-batches and ranks; weighted by tokens they moved with the split.
    additive_metrics = ADDITIVE_METRICS | {"num_groups", "reg_reward_mean", "log_ratio_mean"}

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.reward_functions = load_reward_functions(cfg.reward.functions, cfg.reward.weights, cfg.reward.options)
        online = cfg.rollout.source == "generate"
        self.needs = Needs(reference_model=True, whole_groups=True, importance_correction=False, weight_sync=online)

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor, answer_rewards: torch.Tensor | None = None) -> Advantages:
        """For metrics only: the loss uses rewards and log-probs. At pi = pi_ref the CoPG gradient is
        REINFORCE with the group mean as baseline, so the centred reward is what it weighs."""
        centred = algos.group_advantages(rewards, valid, baseline="mean", scale="none")
        return Advantages(centred)

    def loss(self, mb):
        seq_logp = algos.seq_logprob(mb.logp, mb.mask, reduce="sum")
        seq_ref = algos.seq_logprob(mb.ref_logp, mb.mask, reduce="sum")
        return algos.copg_loss(
            mb.grouped(seq_logp), mb.grouped(seq_ref), mb.grouped(mb.rewards), beta=self.cfg.copg.beta,
            valid=mb.grouped(mb.valid), num_groups=mb.totals.num_groups, num_valid=mb.totals.num_valid,
        )
