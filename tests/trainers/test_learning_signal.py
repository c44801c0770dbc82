"""Runs that cannot learn stop with their likely cause (train.max_flat_steps), instead of training
on all-zero advantages with exit status 0 (issue 28: every reward None, all weights 0, a
temperature of 1e-9 each trained silently)."""

from __future__ import annotations

import pytest
import torch

from align.config import ConfigError
from align.runtime.learning_signal import FlatStepGuard, NoLearningSignalError, StepSignal
from tests.trainers.in_process import make_trainer
from tests.trainers.rewards_for_tests import __file__ as REWARDS_FILE

FLAT = StepSignal(scorable=8, informative=False, identical_groups=False)
MOVING = StepSignal(scorable=8, informative=True, identical_groups=False)


def test_the_guard_stops_after_max_flat_steps_in_a_row_and_a_signal_resets_it():
    guard = FlatStepGuard(3, temperature=1.0)
    for signal in (FLAT, FLAT, MOVING, FLAT, FLAT):  # the streak restarts at the informative step
        guard.record(signal)
    with pytest.raises(NoLearningSignalError, match="3 steps in a row had no learning signal.*rewards were equal"):
        guard.record(FLAT)
    never = FlatStepGuard(0, temperature=1.0)
    for _ in range(100):
        never.record(FLAT)


def test_a_step_signal_reads_completion_and_reference_answer_advantages():
    valid = torch.tensor([[True, True], [True, False]])
    zeros = torch.zeros(2, 2)
    assert not StepSignal.of(valid, zeros, None, False).informative
    invalid_only = torch.tensor([[0.0, 0.0], [0.0, 5.0]])  # a non-zero advantage on an unscorable sample is no signal
    assert not StepSignal.of(valid, invalid_only, None, False).informative
    assert StepSignal.of(valid, zeros, torch.tensor([0.0, 0.3]), False).informative  # GRAO's reference answers
    assert StepSignal.of(valid, zeros, None, False).scorable == 3


@pytest.mark.parametrize("overrides, cause", [
    ([f"reward.functions=[{REWARDS_FILE}:always_none]", "reward.weights=null"], "every sample's reward was None"),
    ([f"reward.functions=[{REWARDS_FILE}:constant]", "reward.weights=null"], "every group's rewards were equal"),
    ([f"reward.functions=[{REWARDS_FILE}:digit_fraction]", "reward.weights=null", "rollout.temperature=1e-9"],
     "effectively greedy (rollout.temperature=1e-09)"),
], ids=["all-unscorable", "all-flat", "greedy"])
def test_a_run_without_learning_signal_stops_naming_the_cause(overrides, cause, cache_dir, tmp_path):
    trainer = make_trainer(cache_dir, tmp_path / "run", *overrides, "train.steps=5", "train.max_flat_steps=2")
    with pytest.raises(NoLearningSignalError, match="2 steps in a row") as info:
        trainer.train()
    assert cause in str(info.value) and "\n" not in str(info.value)
    assert "train.max_flat_steps=0" in str(info.value)  # the opt-out is named


def test_max_flat_steps_zero_trains_on(cache_dir, tmp_path):
    trainer = make_trainer(cache_dir, tmp_path / "run", f"reward.functions=[{REWARDS_FILE}:constant]", "reward.weights=null",
                           "train.steps=3", "train.max_flat_steps=0", "log.save_every=0")
    trainer.train()
    assert trainer.flat_guard.flat_in_a_row == 3


def test_all_zero_reward_weights_are_refused_up_front():
    from align.algorithms import load_config, validate

    with pytest.raises(ConfigError, match=r"reward.weights=\[0.0, 0.0\]: all 0"):
        validate(load_config(["recipe=grpo_math", f"reward.functions=[math_accuracy,{REWARDS_FILE}:digit_fraction]",
                              "reward.weights=[0,0]"]), 1)
