"""Options a run accepts but that cannot act in it, said in one line each at the start (and by `explain`).

Four kinds:
- The data section under rollout.source=episodes: tasks come from the environment (env.*), so no
  data.* key is read.
- An option of the loss keys the algorithm does not read at all (its `unread_loss_options`: GRAO
  and CoPG have their own advantages and no KL term of loss.beta), or, for an algorithm without an
  importance ratio, any surrogate option.
- An option of another surrogate: loss.cispo_cap under loss.surrogate=clip, loss.eps_high under
  cispo. The active surrogate's `reads` (align/algos/surrogates.py) says which keys it uses.
- A ratio option with nothing to act on. The clip range, dual clip, delta, CISPO's cap and SAPO's
  temperatures act on the ratio pi_theta / pi_old. With one update per rollout batch pi_old is the
  policy being updated, so the ratio is exactly 1 at that update and they change nothing: a user
  comparing two of them would see noise and conclude they are equal. The ratio moves only with
  train.updates_per_batch > 1, or with loss.off_policy_correction=bypass, where pi_old is the
  engine's behaviour policy (stale under rollout.max_staleness >= 1). VESPO's parameters are left
  out: its weight also takes the engine's importance weights (loss.tis_cap), which move.
"""

from __future__ import annotations

from dataclasses import fields

from align.config.schema import Config, DataConfig, LossConfig

RATIO_OPTIONS = ("eps_low", "eps_high", "dual_clip", "delta", "cispo_cap", "sapo_tau_pos", "sapo_tau_neg")
# Every loss key some surrogate reads; the clip's are the default (the config layer cannot import the registry).
SURROGATE_OPTIONS = RATIO_OPTIONS + ("vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg")
CLIP_READS = ("eps_low", "eps_high", "dual_clip", "delta", "ratio_level")


def inert_ratio_options(cfg: Config, has_ratio: bool = True, reads: tuple[str, ...] = CLIP_READS,
                        unread: tuple[str, ...] = ()) -> list[str]:
    """Warning lines naming the loss options set away from their defaults that cannot act here.

    `has_ratio`: the algorithm's loss has an importance ratio (Needs.importance_correction); the
    others (GRAO, CoPG) do not read these options at all. `reads`: the loss keys the active
    surrogate reads (`SURROGATES[cfg.loss.surrogate].reads`). `unread`: loss keys (names in the
    section) the algorithm never reads (`Algorithm.unread_loss_options`)."""
    return _unread_data(cfg) + _inert_loss_options(cfg, has_ratio, reads, unread)


def _unread_data(cfg: Config) -> list[str]:
    if cfg.rollout.source != "episodes":
        return []
    fresh = DataConfig()
    changed = [f"data.{f.name}={getattr(cfg.data, f.name)}" for f in fields(DataConfig) if getattr(cfg.data, f.name) != getattr(fresh, f.name)]
    return [f"warning: {', '.join(changed)} {_verb(changed)} no effect here: rollout.source=episodes takes its tasks from "
            "the environment (env.*)"] if changed else []


def _inert_loss_options(cfg: Config, has_ratio: bool, reads: tuple[str, ...], unread: tuple[str, ...]) -> list[str]:
    defaults = {f.name: f.default for f in fields(LossConfig)}
    surrogate = () if has_ratio else SURROGATE_OPTIONS + ("surrogate", "ratio_level")
    ignored = [name for name in dict.fromkeys(unread + surrogate) if getattr(cfg.loss, name) != defaults[name]]
    if ignored:  # nothing else applies to these
        return [f"warning: {_listed(cfg, ignored)} {_verb(ignored)} no effect here: algo={cfg.algo} does not read "
                f"{'it' if len(ignored) == 1 else 'them'}" + ("" if has_ratio else " (its loss has no importance ratio)")]
    if not has_ratio:
        return []
    changed = [name for name in SURROGATE_OPTIONS if getattr(cfg.loss, name) != defaults[name]]
    lines = []
    unread = [name for name in changed if name not in reads]
    if unread:
        lines.append(f"warning: {_listed(cfg, unread)} {_verb(unread)} no effect here: loss.surrogate={cfg.loss.surrogate} "
                     f"reads {', '.join('loss.' + k for k in reads)}")
    idle = [name for name in changed if name in reads and name in RATIO_OPTIONS]
    if idle and cfg.train.updates_per_batch == 1 and cfg.loss.off_policy_correction != "bypass":
        lines.append(f"warning: {_listed(cfg, idle)} {_verb(idle)} no effect here: with train.updates_per_batch=1 the ratio "
                     "pi_theta / pi_old is exactly 1 at the only update (set train.updates_per_batch > 1 for it to act)")
    return lines


def _listed(cfg: Config, names: list[str]) -> str:
    return ", ".join(f"loss.{name}={getattr(cfg.loss, name)}" for name in names)


def _verb(names: list[str]) -> str:
    return "has" if len(names) == 1 else "have"
