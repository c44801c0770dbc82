"""GRAO: a judge scores each sample against the prompt's reference answer y; one loss explores,
imitates y and regularises the gap (ALGORITHMS.md section 3).

The judge is any reward-function spec (`grao.judge`) called with the reference answers as
`reference=`; it must return -1 (worse than y), 0 (tie) or +1 (better), or None where it could not
judge (an LLM judge's unparseable verdict): that sample is invalid (advantage 0, outside the group
statistics, counted in reward/unscorable_frac), so one malformed verdict never stops a run.
An LLM judge (`judge:PATH`, `judge:self`) takes its options from reward.options[<spec>] and uses the
pairwise template unless told otherwise. `reward.functions` are not trained on: they are logged, and
evaluation reads its accuracy among them (align/training/evaluation.py); an empty list logs nothing but the judge.
Needs: the reference answer forwarded with grad next to its group (whole groups per micro-batch);
no reference model, no importance ratio (one update per rollout batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from align import algos
from align.algorithms.base import ADDITIVE_METRICS, Advantages, Needs, Scores
from align.algorithms.grpo import GRPO, _as_groups, logged_means
from align.config import Config, ConfigError
from rewards.runner import RewardFunctionError, compute_rewards, load_reward_functions

JUDGE_VALUES = (-1.0, 0.0, 1.0)


def check_judgements(values: list, judge: str, prompts: list) -> None:
    """One-line error naming the first completion whose judgement is not -1, 0, +1 or None (unjudged)."""
    for row, value in enumerate(values):
        if value is not None and float(value) not in JUDGE_VALUES:
            prompt = str(prompts[row])[-80:]
            raise RewardFunctionError(
                f"judge {judge!r} returned {value!r} for completion {row} (prompt ...{prompt!r}); "
                "a judge must return -1 (worse than the reference), 0 (tie), 1 (better) or None (could not judge)"
            )


def judge_options(cfg: Config) -> dict:
    """reward.options for GRAO's judge; an LLM judge defaults to the pairwise (better/tie/worse) template."""
    spec = cfg.grao.judge
    options = dict(cfg.reward.options.get(spec, {}))
    if spec.startswith("judge:"):
        template = options.setdefault("template", "pairwise")
        if template != "pairwise":
            raise ConfigError(f"grao.judge={spec} has template={template!r}; GRAO needs verdicts -1/0/+1 against the "
                              f"reference: use template: pairwise in reward.options[{spec!r}]")
    return options


@dataclass
class GRAOConfig:
    """GRAO (ALGORITHMS.md section 3): J = A_o*Jexp(o) + beta*A_y*Jimit(y) + lam*A_o*(Jexp(o) - Jimit(y))."""

    beta: float = 0.5  # weight of the imitation term (the reference answer's likelihood); paper 0.5
    lam: float = 0.6  # weight of the regulariser on the gap Jexp(o) - Jimit(y); paper 0.6
    pool_ref: bool = True  # advantage statistics over the G samples AND y (G+1 rewards); False = samples only
    ddof: int = 0  # std of the advantage normalisation: 0 = population std (the paper's Eq. 4)
    adv_eps: float = 1e-6  # added to the std of the advantage normalisation
    reference_column: str = "solution"  # dataset column holding the reference answer y (text)
    # Judge: a reward-function spec (a registered name, file.py:fn, module:fn, or an LLM judge
    # judge:PATH / judge:self, pairwise template by default) called like a reward function with the
    # reference answers as `reference=`; returns +1 (o better than y), 0 (tie), -1, or None (unjudged).
    judge: str = "geometry_judge"


class GRAO(GRPO):
    name = "grao"
    section = "grao"
    config_class = GRAOConfig
    policy_gradient_loss = False
    sources = ("generate",)
    # its own advantages (grao.* / centred rewards) and loss: GRPO's advantage, KL and aggregation keys do nothing
    unread_loss_options = ("baseline", "scale", "ddof", "adv_eps", "small_group", "beta", "kl_kind", "kl_clamp", "agg")

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        if cfg.train.updates_per_batch != 1:
            raise ConfigError("algo=grao has no importance ratio (one update per rollout batch); set train.updates_per_batch=1")
        if cfg.rollout.max_staleness and cfg.loss.off_policy_correction != "decoupled":
            # No ratio for bypass to move: stale samples are corrected by the decoupled weight alone.
            raise ConfigError(f"algo=grao with rollout.max_staleness={cfg.rollout.max_staleness} and "
                              f"loss.off_policy_correction={cfg.loss.off_policy_correction}: GRAO's loss has no importance "
                              "ratio for bypass to act on; set loss.off_policy_correction=decoupled (the weight "
                              "min(pi_current / mu, loss.tis_cap) on the samples' log-likelihood terms)")
    # All five are per-prompt means (G samples per prompt), so they combine as shares of the step's
    # prompts; weighted by completion tokens, jexp/jimit_mean moved with the micro-batch split.
    additive_metrics = ADDITIVE_METRICS | {"j_explore", "j_imitate", "j_regulariser", "jexp_mean", "jimit_mean"}

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.judge = load_reward_functions([cfg.grao.judge], None, {cfg.grao.judge: judge_options(cfg)})[0]
        stray = sorted(set(cfg.reward.options) - {cfg.grao.judge, *cfg.reward.functions})
        if stray:  # e.g. options left for a judge that grao.judge no longer names: they would be ignored
            raise ConfigError(f"reward.options has {stray[0]!r}, which is neither grao.judge ({cfg.grao.judge}) nor among "
                              f"reward.functions {list(cfg.reward.functions)}; key the options by one of them")
        logged_options = {k: v for k, v in cfg.reward.options.items() if k != cfg.grao.judge}
        self.reward_functions = (load_reward_functions(cfg.reward.functions, cfg.reward.weights, logged_options)
                                 if cfg.reward.functions else [])
        self.reference_column = cfg.grao.reference_column
        self.needs = Needs(reference_answer=True, whole_groups=True, importance_correction=False, weighted_when_stale=True)

    def score(self, prompts, completions, columns, completion_ids, group_size: int, trainer_state=None) -> Scores:
        if self.reference_column not in columns:
            raise RewardFunctionError(
                f"algo=grao needs a reference-answer column {self.reference_column!r}; the dataset has "
                f"{', '.join(sorted(columns)) or 'none'}; set grao.reference_column=<one of them>"
            )
        judge_columns = {**columns, "reference": columns[self.reference_column]}
        judged = compute_rewards([self.judge], prompts, completions, judge_columns, completion_ids,
                                 trainer_state=trainer_state, timeout_s=self.cfg.reward.timeout_s)
        values = judged.per_function[self.judge.name]
        check_judgements(values, self.judge.name, prompts)
        metrics = logged_means(judged)  # e.g. an LLM judge's unparseable_frac
        components = {}
        if self.reward_functions:
            logged = compute_rewards(self.reward_functions, prompts, completions, columns, completion_ids,
                                     trainer_state=trainer_state, timeout_s=self.cfg.reward.timeout_s)
            components = {name: _as_groups(vals, group_size) for name, vals in logged.per_function.items()}
            metrics.update(logged_means(logged))
        rewards = _as_groups(values, group_size)  # None -> nan: invalid, counted in reward/unscorable_frac
        return Scores(rewards, ~rewards.isnan(), {"judge": rewards.clone(), **components}, metrics)

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor, answer_rewards: torch.Tensor | None = None) -> Advantages:
        g = self.cfg.grao
        # R(y, y) = 0: the reference ties with itself under a pairwise judge (ALGORITHMS.md #11).
        r_y = torch.zeros(rewards.shape[0]) if answer_rewards is None else answer_rewards
        a_o, a_y = algos.grao_advantages(rewards, r_y, pool_ref=g.pool_ref, ddof=g.ddof, eps=g.adv_eps, valid=valid)
        return Advantages(a_o, a_y)

    def loss(self, mb):
        g = self.cfg.grao
        loss, m = algos.grao_loss(
            mb.grouped(mb.logp), mb.grouped(mb.mask), mb.answer_logp, mb.answer_mask,
            mb.grouped(mb.advantages), mb.answer_advantages, beta=g.beta, lam=g.lam, num_prompts=mb.totals.num_prompts,
            is_weights=None if mb.is_weights is None else mb.grouped(mb.is_weights),
        )
        # The metrics as additive shares of their step means (they are per-prompt means here).
        share = mb.answer_logp.shape[0] / max(mb.totals.num_prompts, 1.0)
        m = {k: (v * share if k in self.additive_metrics else v) for k, v in m.items()}
        return loss, m
