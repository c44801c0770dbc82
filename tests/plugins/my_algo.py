"""The worked example of CONTRIBUTING.md "An algorithm outside the package" (tests copy it out of the repository)."""

from dataclasses import dataclass

from align import GRPO, Advantages


@dataclass
class ScaledConfig:
    scale: float = 0.5  # every advantage is multiplied by this


class ScaledGRPO(GRPO):
    """GRPO whose advantages are scaled by a constant (scaled.scale)."""

    section = "scaled"  # its keys: scaled.scale=... on the command line and in recipes
    config_class = ScaledConfig

    def advantages(self, rewards, valid, answer_rewards=None):
        plain = super().advantages(rewards, valid, answer_rewards)
        return Advantages(plain.completions * self.cfg.scaled.scale)


class CountingGRPO(GRPO):
    """GRPO with free-form options: no config dataclass, so its keys are algo_options.*."""
