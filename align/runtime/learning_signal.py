"""Runs that cannot learn: stop them with the likely cause instead of training on zeros for hours.

A step carries no learning signal when every advantage is 0: every sample unscorable (a reward
that returns None for everything), or every group's rewards equal (all 0 or all 1, or the G
samples of each prompt identical because sampling is effectively greedy). A few such steps happen
in a healthy run; `train.max_flat_steps` of them in a row stop it with one line naming the cause
(0 = never stop). The decision is taken on the global batch, so every rank stops together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from align.errors import UserError


class NoLearningSignalError(UserError, RuntimeError):
    """`train.max_flat_steps` steps in a row had no learning signal; the message is one line."""


@dataclass(frozen=True)
class StepSignal:
    """What one step's global batch says about its learning signal."""

    scorable: int  # samples with a usable reward
    informative: bool  # some advantage (of a completion or a reference answer) is non-zero
    identical_groups: bool  # every group's G completions are the same tokens

    @classmethod
    def of(cls, valid: torch.Tensor, advantages: torch.Tensor, answer_advantages: torch.Tensor | None,
           identical_groups: bool) -> StepSignal:
        moved = bool((advantages[valid] != 0).any()) or (answer_advantages is not None and bool((answer_advantages != 0).any()))
        return cls(scorable=int(valid.sum()), informative=moved, identical_groups=identical_groups)


def likely_cause(signal: StepSignal, temperature: float) -> str:
    if signal.scorable == 0:
        return ("every sample's reward was None (reward/unscorable_frac=1): a reward function that cannot score "
                "these completions, e.g. a wrong data.answer_column or an answer format it never parses")
    if signal.identical_groups:
        return (f"the G completions of every prompt were identical: sampling is effectively greedy "
                f"(rollout.temperature={temperature:g}); raise rollout.temperature (e.g. 1.0)")
    return ("every group's rewards were equal (zero_std_frac=1): the task is too hard or too easy for this model "
            "(rewards all 0 or all 1); use an easier dataset, or a model that solves some prompts (a warm start)")


class FlatStepGuard:
    def __init__(self, max_flat_steps: int, temperature: float):
        self.max_flat_steps, self.temperature = max_flat_steps, temperature
        self.flat_in_a_row = 0

    def record(self, signal: StepSignal) -> None:
        """Count consecutive steps without signal; raise once there are `max_flat_steps` of them."""
        self.flat_in_a_row = 0 if signal.informative else self.flat_in_a_row + 1
        if self.max_flat_steps and self.flat_in_a_row >= self.max_flat_steps:
            raise NoLearningSignalError(
                f"{self.flat_in_a_row} steps in a row had no learning signal (every advantage 0): "
                f"{likely_cause(signal, self.temperature)}; train.max_flat_steps=0 trains on regardless"
            )
