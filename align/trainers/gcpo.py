"""GCPO (GeometryZero): GRPO whose reward adds a per-problem auxiliary-construction term.

R_i = acc_i + w_fmt * fmt_i + M(q) * w_aux * aux_i + w_len * min(L_i, L_max) / L_max, where the
group contrastive mask M(q) in {-1, 0, +1} says whether, among this prompt's own G rollouts, the
ones that constructed were more (or less) accurate than the ones that did not (ALGORITHMS.md s.2).
Only `score` (and the metrics it implies) differs from GRPO; advantages and loss are GRPO's.
"""

from __future__ import annotations

import torch

from align import algos
from align.config import Config
from align.rewards import compute_rewards, load_reward_functions
from align.trainers.algorithm import Scores
from align.trainers.grpo import GRPO, _as_groups, logged_means
from align.trainers.report import Signal


class GCPO(GRPO):
    name = "gcpo"

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
