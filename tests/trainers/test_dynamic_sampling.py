"""Dynamic sampling's first round (loss.dynamic_sampling_oversample): drawing more prompts up front
replaces refill rounds, which cannot be generated ahead under rollout.max_staleness >= 1."""

from __future__ import annotations

import pytest

from align.config import ConfigError
from align.algorithms import load_config
from tests.test_options_live import HALF_FLAT
from tests.trainers.in_process import make_trainer

DYNAMIC = ("loss.dynamic_sampling=true", *HALF_FLAT, "loss.dynamic_sampling_max_rounds=4", "data.options.size=256")


def _steps(cache_dir, run_dir, *overrides, steps=3):
    trainer = make_trainer(cache_dir, run_dir, *DYNAMIC, *overrides)
    rows = [trainer.step(s)[0] for s in range(steps)]
    stream = trainer.source.prompts
    return rows, stream.epoch * len(stream.dataset) + stream.position  # prompts drawn


def test_an_oversampled_first_round_leaves_no_refill_round(cache_dir, tmp_path):
    plain, drawn_plain = _steps(cache_dir, tmp_path / "plain")
    over, drawn_over = _steps(cache_dir, tmp_path / "over", "loss.dynamic_sampling_oversample=3")
    # About half the groups are flat: one round of 8 prompts rarely keeps 8; one of 24 does.
    assert sum(r["rollout/refill_rounds"] for r in plain) >= 2
    assert [r["rollout/refill_rounds"] for r in over] == [0.0, 0.0, 0.0]
    assert drawn_over == 3 * 24  # each step drew ceil(3 * 8) prompts, in one round
    assert drawn_plain < drawn_over


def test_oversampling_needs_dynamic_sampling_and_at_least_one():
    with pytest.raises(ConfigError, match="loss.dynamic_sampling_oversample=2.*set loss.dynamic_sampling=true"):
        load_config(["recipe=grpo_math", "loss.dynamic_sampling_oversample=2"])
    with pytest.raises(ConfigError, match="loss.dynamic_sampling_oversample=0.5"):
        load_config(["recipe=grpo_math", "loss.dynamic_sampling=true", "loss.dynamic_sampling_oversample=0.5"])
