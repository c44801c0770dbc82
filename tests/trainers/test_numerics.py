"""A NaN/inf loss or gradient skips the update (weights untouched, counted); N in a row stop the run with
the last good checkpoint kept. A real in-process Trainer on the tiny model, with the fault injected."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from align.config import ConfigError
from align.algorithms import load_config, validate
from align.cli.train import build_algorithm
from align.training.loop import Trainer
from align.training.checkpoint import find_checkpoint
from align.runtime.numerics import TrainingDivergedError
from tests.trainers.test_train_e2e import QUICK, read_metrics


def make_trainer(cache_dir, run_dir, *overrides) -> Trainer:
    cfg = load_config([*QUICK, f"model.cache_dir={cache_dir}", f"log.run_dir={run_dir}", "log.report_to=[]", *overrides])
    validate(cfg, 1)
    return Trainer(cfg, Accelerator(cpu=True), build_algorithm(cfg), run_dir)


def inject(trainer: Trainer, bad_steps: set[int], kind: str) -> list[torch.Tensor]:
    """Make the loss (or the gradient) of `bad_steps` non-finite; return the weights after each step."""
    state = {"poison": False}
    snapshots: list[torch.Tensor] = []
    weights = lambda: torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])  # noqa: E731
    step, loss = trainer.step, trainer.algo.loss

    def poisoned_step(i):
        state["poison"] = i in bad_steps
        out = step(i)
        snapshots.append(weights())
        return out

    def poisoned_loss(*args, **kwargs):
        value, metrics = loss(*args, **kwargs)
        if state["poison"] and kind == "nan_loss":
            value = value * math.nan
        if state["poison"] and kind == "inf_grad":
            value.register_hook(lambda grad: grad * math.inf)
        return value, metrics

    trainer.step, trainer.algo.loss = poisoned_step, poisoned_loss
    snapshots.append(weights())
    return snapshots


@pytest.mark.parametrize("kind", ["nan_loss", "inf_grad"])
def test_a_bad_update_is_skipped_and_counted(cache_dir, tmp_path, kind):
    trainer = make_trainer(cache_dir, tmp_path / "run", "train.steps=3", "log.save_every=0")
    snapshots = inject(trainer, {1}, kind)
    trainer.train()
    assert [r["train/skipped_updates"] for r in read_metrics(tmp_path / "run")] == [0.0, 1.0, 0.0]
    assert all(torch.isfinite(w).all() for w in snapshots)
    assert not torch.equal(snapshots[0], snapshots[1])  # a good step moves the weights
    assert torch.equal(snapshots[1], snapshots[2])  # the bad one does not
    assert not torch.equal(snapshots[2], snapshots[3])  # and training goes on after it


def test_too_many_bad_updates_in_a_row_stop_with_the_last_good_checkpoint(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    trainer = make_trainer(cache_dir, run_dir, "train.steps=6", "log.save_every=2", "train.max_bad_updates=2")
    snapshots = inject(trainer, {2, 3, 4, 5}, "nan_loss")
    with pytest.raises(TrainingDivergedError) as err:
        trainer.train()
    message = str(err.value)
    assert "\n" not in message and "2 optimizer updates in a row" in message and "train.max_bad_updates=2" in message
    assert len(snapshots) == 4  # the initial weights + 3 finished steps: it stopped inside the 4th (the 2nd bad one)
    assert all(torch.isfinite(w).all() for w in snapshots) and torch.equal(snapshots[2], snapshots[3])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    latest = find_checkpoint(run_dir, "latest")
    assert latest is not None and latest.name == "step-000002"
    assert not (run_dir / "final").exists()


def test_max_bad_updates_must_be_positive():
    with pytest.raises(ConfigError, match="train.max_bad_updates=0: must be >= 1"):
        validate(load_config(["recipe=grpo_math", "train.max_bad_updates=0"]), 1)
