"""GCPO (GeometryZero): GRPO whose reward adds a per-problem auxiliary-construction term.

R_i = acc_i + w_fmt * fmt_i + M(q) * w_aux * aux_i + w_len * min(L_i, L_max) / L_max, where the
group contrastive mask M(q) in {-1, 0, +1} says whether, among this prompt's own G rollouts, the
ones that constructed were more (or less) accurate than the ones that did not (ALGORITHMS.md s.2).
Only `score` (and the metrics it implies) differs from GRPO; advantages and loss are GRPO's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from align import algos
from align.algorithms.base import Scores
from align.algorithms.grpo import GRPO, _as_groups, check_reward_names, logged_means
from align.config import Config, ConfigError, RewardConfig
from align.telemetry.report import Signal
from rewards.runner import compute_rewards, load_reward_functions


@dataclass
class GCPOConfig:
    eps: float = 0.05  # eta: the accuracy difference that flips the contrastive mask
    w_aux: float = 0.5  # weight of the masked aux-construction term
    w_fmt: float = 0.5  # weight of the format reward
    w_len: float = 0.5  # weight of the length term min(L, l_max) / l_max
    l_max: int = 900  # length at which the length term saturates
    use_length: bool = True  # include the length term
    gate_aux_on_correct: bool = False  # aux term only for correct completions
    gate_len_on_correct: bool = False  # length term only for correct completions
    accuracy_reward: str = "geometry_accuracy"  # reward function giving accuracy (also what eval reports)
    format_reward: str = "think_answer_format"  # reward function giving the format score
    aux_reward: str = "aux_construction"  # reward function: > 0 when the completion constructs


class GCPO(GRPO):
    name = "gcpo"
    section = "gcpo"
    config_class = GCPOConfig
    sources = ("generate",)

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        g = cfg.gcpo
        check_reward_names([g.accuracy_reward, g.format_reward, g.aux_reward])
        if cfg.rollout.num_generations == 1:
            raise ConfigError(
                "rollout.num_generations=1 with algo=gcpo: the contrastive mask compares a prompt's own completions, "
                "so a group of one has no mask and no advantage; use rollout.num_generations>=2 (e.g. 8)"
            )
        if cfg.reward.functions != RewardConfig().functions or cfg.reward.weights is not None:
            # GCPO's reward is its own formula over three named functions; a reward.functions list would
            # be printed, validated and never used.
            raise ConfigError(
                "algo=gcpo builds its reward from gcpo.accuracy_reward, gcpo.format_reward and gcpo.aux_reward "
                "(weighted by gcpo.w_fmt, gcpo.w_aux, gcpo.w_len), not from reward.functions / reward.weights; "
                "remove reward.functions and reward.weights, and set the gcpo.* keys instead"
            )

    def __init__(self, cfg: Config):
        self.cfg = cfg
        g = cfg.gcpo
        self.reward_functions = load_reward_functions([g.accuracy_reward, g.format_reward, g.aux_reward], None, cfg.reward.options)
        self.needs = self.grpo_needs(cfg)

    @property
    def signals(self) -> tuple[Signal, ...]:
        """What GCPO is meant to learn, per problem: construct where it pays, not where it costs.

        The held-out rates need a boolean `aux_helps` column (the built-in geometry task has one);
        on other data only the training signals appear.
        """
        aux = self.reward_functions[2].name
        held_out = "aux use, held-out"
        mask = "contrastive mask (groups per step)"
        train = "training accuracy with / without aux"
        return (
            Signal(f"eval/aux_helps/yes/{aux}/rate", "aux use where it helps (held-out)", held_out),
            Signal(f"eval/aux_helps/no/{aux}/rate", "aux use where it hurts (held-out)", held_out),
            Signal("gcpo/mask_pos", "groups where aux paid (mask +1)", mask),
            Signal("gcpo/mask_neg", "groups where aux cost (mask -1)", mask),
            Signal("gcpo/acc_with_aux", "training accuracy with aux", train),
            Signal("gcpo/acc_without_aux", "training accuracy without aux", train),
        )

    def score(self, prompts, completions, columns, completion_ids, group_size: int, trainer_state=None) -> Scores:
        g = self.cfg.gcpo
        result = compute_rewards(
            self.reward_functions, prompts, completions, columns, completion_ids,
            trainer_state=trainer_state, timeout_s=self.cfg.reward.timeout_s,
        )
        self._count_timeouts(result)
        acc, fmt, aux = (_as_groups(result.per_function[f.name], group_size).nan_to_num(0.0) for f in self.reward_functions)
        length = torch.tensor([len(ids) for ids in completion_ids], dtype=torch.float32).view(-1, group_size)
        used_aux = aux > 0
        rewards, _ = algos.gcpo_rewards(
            acc, g.w_fmt * fmt, used_aux, length,
            eps=g.eps, w_aux=g.w_aux, w_len=g.w_len, l_max=g.l_max,
            gate_aux_on_correct=g.gate_aux_on_correct, gate_len_on_correct=g.gate_len_on_correct,
            use_length=g.use_length,
        )
        valid = torch.ones_like(rewards, dtype=torch.bool)
        return Scores(rewards, valid, {"accuracy": acc, "format": fmt, "aux": aux, "length": length}, logged_means(result))

    def batch_metrics(self, scores: Scores) -> dict[str, float]:
        """Mask sign counts, aux usage, accuracy with and without aux, and the length reward."""
        g, c = self.cfg.gcpo, scores.components
        acc, used_aux, length = c["accuracy"], c["aux"] > 0, c["length"]
        contrast = algos.gcpo_contrastive_mask(acc, used_aux, eps=g.eps)
        metrics = {
            "gcpo/mask_pos": (contrast > 0).sum().item(),
            "gcpo/mask_zero": (contrast == 0).sum().item(),
            "gcpo/mask_neg": (contrast < 0).sum().item(),
            "gcpo/aux_rate": used_aux.float().mean().item(),
            "gcpo/length_reward": (g.w_len * length.clamp(max=g.l_max) / g.l_max).mean().item(),
            "reward/accuracy/mean": acc.mean().item(),
            "reward/format/mean": c["format"].mean().item(),
            "reward/timeouts": float(self._take_timeouts()),
        }
        if used_aux.any():
            metrics["gcpo/acc_with_aux"] = acc[used_aux].mean().item()
        if (~used_aux).any():
            metrics["gcpo/acc_without_aux"] = acc[~used_aux].mean().item()
        return metrics
