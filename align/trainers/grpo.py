"""GRPO: weighted verifiable rewards -> group-normalised advantages -> clipped surrogate (+ KL).

An algorithm is three small methods the loop in `base.py` calls: `score` (completions -> rewards
[P, G]), `advantages` (rewards -> advantages) and `loss` (one micro-batch -> loss). GCPO, SALT,
GRAO and CoPG override one of them; the maths is in `align.algos`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from align import algos
from align.config import Config
from align.rewards import RewardResult, compute_rewards, load_reward_functions, reward_metrics


@dataclass
class Scores:
    rewards: torch.Tensor  # [P, G] float32, the scalar reward the advantages are computed from
    valid: torch.Tensor  # [P, G] bool: False where no reward function applied (TRL: advantage 0)
    components: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [P, G] (nan = None)
    # what reward functions sent through log_metric(name, value), averaged per name: "reward/<name>"
    logged: dict[str, float] = field(default_factory=dict)


def logged_means(result: RewardResult) -> dict[str, float]:
    return {f"reward/{name}": sum(values) / len(values) for name, values in result.logged_metrics.items() if values}


def _as_groups(values: list[float | None], group_size: int) -> torch.Tensor:
    flat = torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float32)
    return flat.view(-1, group_size)


class GRPO:
    name = "grpo"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.reward_functions = load_reward_functions(cfg.reward.functions, cfg.reward.weights, cfg.reward.options)

    def score(self, prompts, completions, columns, completion_ids, group_size: int, trainer_state=None) -> Scores:
        result = compute_rewards(
            self.reward_functions, prompts, completions, columns, completion_ids,
            trainer_state=trainer_state, timeout_s=self.cfg.reward.timeout_s,
        )
        components = {name: _as_groups(vals, group_size) for name, vals in result.per_function.items()}
        valid = ~torch.tensor(result.unscorable, dtype=torch.bool).view(-1, group_size)
        return Scores(_as_groups(result.total, group_size), valid, components, logged_means(result))

    def batch_metrics(self, scores: Scores) -> dict[str, float]:
        """Reward statistics of the batch that is trained on (after dynamic sampling)."""
        def values(t: torch.Tensor) -> list[float | None]:
            return [None if math.isnan(v) else v for v in t.flatten().tolist()]

        result = RewardResult(scores.rewards.flatten().tolist(), {k: values(v) for k, v in scores.components.items()},
                              (~scores.valid).flatten().tolist())
        return reward_metrics(result)

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        c = self.cfg.loss
        return algos.group_advantages(
            rewards, valid, baseline=c.baseline, scale=c.scale, ddof=c.ddof, eps=c.adv_eps, small_group=c.small_group
        )

    def loss(self, logp, old_logp, adv_tok, mask, *, ref_logp, is_weights, num_tokens, num_seqs):
        c = self.cfg.loss
        return algos.grpo_loss(
            logp, old_logp, adv_tok, mask,
            ref_logp=ref_logp, beta=0.0 if c.kl_in_reward else c.beta, kl_kind=c.kl_kind, kl_clamp=c.kl_clamp,
            eps_low=c.eps_low, eps_high=c.eps_high, dual_clip=c.dual_clip, delta=c.delta,
            ratio_level=c.ratio_level, is_weights=is_weights, agg=c.agg, const_len=self.cfg.rollout.max_tokens,
            num_tokens=num_tokens, num_seqs=num_seqs,
        )
