"""GRPO: weighted verifiable rewards -> group-normalised advantages -> clipped surrogate (+ KL).

The reference algorithm (align/algorithms/base.py has the interface): `needs` says which phases the
loop runs, `score` turns completions into rewards [P, G], `advantages` normalises them per group,
`loss` takes one `MicroBatch`. GCPO overrides `score`; GRAO and CoPG override the rest; the maths
is in `align.algos`. Hyper-parameters: the `loss` config section.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from align import algos
from align.algorithms.base import Advantages, Algorithm, Needs, Scores
from align.algos import MicroBatch
from align.algos.surrogates import CLIP_OPTIONS, SURROGATES
from align.config import Config, ConfigError
from rewards.registry import get_reward_function
from rewards.runner import RewardResult, compute_rewards, load_reward_functions, reward_metrics

__all__ = ["GRPO", "Scores"]


def logged_means(result: RewardResult) -> dict[str, float]:
    """What reward functions sent through TRL's log_metric(name, value), averaged per name."""
    return {f"reward/{name}": sum(values) / len(values) for name, values in result.logged_metrics.items() if values}


def _as_groups(values: list[float | None], group_size: int) -> torch.Tensor:
    flat = torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float32)
    return flat.view(-1, group_size)


def check_reward_names(specs) -> None:
    """Registry names must exist (RewardSpecError names the closest); file/module specs are checked when loaded."""
    for spec in specs:
        if isinstance(spec, str) and ":" not in spec:
            get_reward_function(spec)


def surrogate_options(lc) -> dict[str, object]:
    """The loss.* values the active surrogate reads beyond the clip arguments (cispo_cap, sapo_tau_*...)."""
    return {k: getattr(lc, k) for k in SURROGATES[lc.surrogate].reads if k not in CLIP_OPTIONS}


class GRPO(Algorithm):
    name = "grpo"
    sources = ("generate", "episodes")
    # GRAO and CoPG have losses of their own: the surrogate, token selection and entropy bonus do not apply.
    policy_gradient_loss: ClassVar[bool] = True
    # The algorithm's own metrics (align.telemetry.report.Signal), shown in the evaluation tables
    # and metrics.png next to the held-out accuracy. Plain GRPO has none beyond reward and accuracy.
    signals: tuple = ()

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.reward_functions = load_reward_functions(cfg.reward.functions, cfg.reward.weights, cfg.reward.options)
        self.needs = self.grpo_needs(cfg)

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        check_reward_names(cfg.reward.functions)  # a misspelt name is the real problem, not the weights count
        if cfg.reward.weights is not None and len(cfg.reward.weights) != len(cfg.reward.functions):
            raise ConfigError(
                f"reward.weights has {len(cfg.reward.weights)} entries but reward.functions has "
                f"{len(cfg.reward.functions)}; give one weight per function"
            )
        if cfg.loss.surrogate not in SURROGATES:
            raise ConfigError(f"loss.surrogate={cfg.loss.surrogate!r} is not registered; registered surrogates: "
                              f"{', '.join(sorted(SURROGATES))} (align/algos/surrogates.py)")
        cls._validate_policy_gradient_options(cfg)

    @classmethod
    def _validate_policy_gradient_options(cls, cfg: Config) -> None:
        """The surrogate's own options, token selection and the entropy bonus: values the loss accepts,
        and only for the algorithms whose loss reads them."""
        lc = cfg.loss
        own = {"surrogate": "clip", "top_entropy_quantile": 1.0, "entropy_coef": 0.0}
        if not cls.policy_gradient_loss:
            changed = [f"loss.{k}={getattr(lc, k)}" for k, default in own.items() if getattr(lc, k) != default]
            if changed:
                raise ConfigError(f"{', '.join(changed)}: algo={cfg.algo} has a loss of its own that does not read "
                                  "it; leave it at its default or use algo=grpo / gcpo / salt")
            return
        try:  # the surrogate's own checks, on one token: the same messages as at the first step, but now
            one = torch.zeros(1, 1)
            SURROGATES[lc.surrogate].fn(one, one, torch.zeros(1), mask=torch.ones(1, 1), is_weights=None,
                                        **surrogate_options(lc))
        except ValueError as error:
            raise ConfigError(f"loss.{error} (loss.surrogate={lc.surrogate})") from None
        if not 0 <= lc.top_entropy_quantile <= 1:
            raise ConfigError(f"loss.top_entropy_quantile={lc.top_entropy_quantile}: the share of tokens kept by "
                              "entropy, in [0, 1] (1 keeps all; 0.2 is the paper's)")
        if lc.ref_sync and (lc.ref_sync_every < 1 or not 0 < lc.ref_sync_alpha <= 1):
            raise ConfigError(f"loss.ref_sync_every={lc.ref_sync_every}, loss.ref_sync_alpha={lc.ref_sync_alpha}: "
                              "the reference is mixed every N >= 1 steps with a policy share alpha in (0, 1]")

    @staticmethod
    def grpo_needs(cfg: Config) -> Needs:
        # No reference model at all when the KL term is off.
        return Needs(reference_model=cfg.loss.beta > 0, importance_correction=True)

    def score(self, prompts, completions, columns, completion_ids, group_size: int, trainer_state=None) -> Scores:
        result = compute_rewards(
            self.reward_functions, prompts, completions, columns, completion_ids,
            trainer_state=trainer_state, timeout_s=self.cfg.reward.timeout_s,
        )
        self._count_timeouts(result)
        components = {name: _as_groups(vals, group_size) for name, vals in result.per_function.items()}
        valid = ~torch.tensor(result.unscorable, dtype=torch.bool).view(-1, group_size)
        return Scores(_as_groups(result.total, group_size), valid, components, logged_means(result))

    def batch_metrics(self, scores: Scores) -> dict[str, float]:
        """Reward statistics of the batch that is trained on (after dynamic sampling)."""
        def values(t: torch.Tensor) -> list[float | None]:
            return [None if math.isnan(v) else v for v in t.flatten().tolist()]

        result = RewardResult(scores.rewards.flatten().tolist(), {k: values(v) for k, v in scores.components.items()},
                              (~scores.valid).flatten().tolist(), timeouts=self._take_timeouts())
        return reward_metrics(result)

    def _count_timeouts(self, result: RewardResult) -> None:
        # Summed over every scoring round of the step (dynamic sampling), reported once by batch_metrics.
        self._reward_timeouts = getattr(self, "_reward_timeouts", 0) + result.timeouts

    def _take_timeouts(self) -> int:
        count, self._reward_timeouts = getattr(self, "_reward_timeouts", 0), 0
        return count

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor, answer_rewards: torch.Tensor | None = None) -> Advantages:
        c = self.cfg.loss
        return Advantages(algos.group_advantages(
            rewards, valid, baseline=c.baseline, scale=c.scale, ddof=c.ddof, eps=c.adv_eps, small_group=c.small_group
        ))

    def loss(self, mb: MicroBatch):
        c = self.cfg.loss
        return algos.grpo_loss(
            mb.logp, mb.old_logp, mb.advantages, mb.mask,
            ref_logp=mb.ref_logp, beta=0.0 if c.kl_in_reward else c.beta, kl_kind=c.kl_kind, kl_clamp=c.kl_clamp,
            eps_low=c.eps_low, eps_high=c.eps_high, dual_clip=c.dual_clip, delta=c.delta,
            ratio_level=c.ratio_level, surrogate=c.surrogate, surrogate_options=surrogate_options(c),
            is_weights=mb.is_weights, pg_mask=mb.pg_mask, entropy=mb.entropy, entropy_coef=c.entropy_coef,
            entropy_tokens=mb.totals.num_tokens if mb.totals.kept_tokens is None else mb.totals.kept_tokens,
            agg=c.agg, const_len=self.cfg.rollout.max_tokens, num_tokens=mb.totals.num_tokens, num_seqs=mb.totals.num_seqs,
        )
