"""A reward model and the policy as its own judge inside a real training run (`accelerate launch align/train.py`)."""

from __future__ import annotations

import json

import pytest

from tests.trainers.test_train_e2e import launch, read_metrics


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory) -> str:
    from align.models.tiny import write_tiny_reward_model

    return str(write_tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny-rm", seed=3))


def test_training_with_a_reward_model_and_a_self_judge(cache_dir, rm_path, tmp_path):
    run_dir = tmp_path / "run"
    options = {f"rm:{rm_path}": {"normalize": True, "clip": 1.5, "max_length": 40}, "judge:self": {"max_tokens": 6, "prompt": "{conversation}\n{response}\nRate 1-10:"}}
    launch(cache_dir, "train.steps=1", f"log.run_dir={run_dir}", f"reward.functions=[math_accuracy,rm:{rm_path},judge:self]",
           "reward.weights=[1.0,0.5,1.0]", f"reward.options={json.dumps(options)}")
    rows = read_metrics(run_dir)
    last = rows[-1]
    # weighted and logged like any other reward, plus the model rewards' own counters
    assert abs(last["reward/rm:tiny-rm/mean"]) <= 1.5 and last["reward/rm:tiny-rm/std"] > 0
    assert 0 < last["reward/rm:tiny-rm/truncated_frac"] <= 1  # prompts + 16 tokens exceed 40 on the tiny tokenizer
    assert last["reward/rm:tiny-rm/batches"] >= 1 and "reward/rm:tiny-rm/raw_mean" in last
    assert last["reward/judge:self/unparseable_frac"] == 1.0  # an untrained policy never writes "Rating: N"
    assert last["time/reward"] > 0
