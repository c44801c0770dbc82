"""Options a run accepts but that cannot act in it, said in one line at the start (and by `explain`).

The clip range, dual clip and delta act on the ratio pi_theta / pi_old. With one update per rollout
batch pi_old is the policy being updated, so the ratio is exactly 1 at that update and they change
nothing: a user comparing two of them would see noise and conclude they are equal. The ratio moves
only with train.updates_per_batch > 1, or with loss.off_policy_correction=bypass, where pi_old is the
engine's behaviour policy (stale under rollout.max_staleness >= 1).
"""

from __future__ import annotations

from dataclasses import fields

from align.config.schema import Config, LossConfig

RATIO_OPTIONS = ("eps_low", "eps_high", "dual_clip", "delta")


def inert_ratio_options(cfg: Config, has_ratio: bool = True) -> str | None:
    """One warning line naming the ratio options set away from their defaults that cannot act, or None.

    `has_ratio`: the algorithm's loss has an importance ratio (Needs.importance_correction); the
    others (GRAO, CoPG) do not read these options at all."""
    if not has_ratio or cfg.train.updates_per_batch > 1 or cfg.loss.off_policy_correction == "bypass":
        return None
    defaults = {f.name: f.default for f in fields(LossConfig)}
    changed = [f"loss.{name}={getattr(cfg.loss, name)}" for name in RATIO_OPTIONS if getattr(cfg.loss, name) != defaults[name]]
    if not changed:
        return None
    verb = "has" if len(changed) == 1 else "have"
    return (f"warning: {', '.join(changed)} {verb} no effect here: with train.updates_per_batch=1 the ratio "
            "pi_theta / pi_old is exactly 1 at the only update (set train.updates_per_batch > 1 for it to act)")
