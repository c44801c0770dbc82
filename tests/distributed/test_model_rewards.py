"""A reward model under data parallelism: each of 2 processes scores its own share of the completions,
and the rewards (normalised with moments over all ranks) equal one process's, under plain DDP and under
ZeRO-3 with the reward model replicated or sharded like the reference model (the latter with dynamic
sampling, whose small refills leave a rank idle while the other scores)."""

from __future__ import annotations

import json

import pytest

from tests.distributed.test_data_parallel import STEPS, launch, metrics

pytestmark = pytest.mark.slow
NAME = "rm:tiny-rm"
# (per-function std is a mean of the ranks' spreads in the logs, an approximation: not compared)
COMPARED = ["reward/mean", f"reward/{NAME}/mean", f"reward/{NAME}/raw_mean", "loss", "grad_norm"]


@pytest.fixture(scope="module")
def rm_runs(cache_dir, tmp_path_factory):
    from align.models.tiny import write_tiny_reward_model

    base = tmp_path_factory.mktemp("rm-dp")
    rm = write_tiny_reward_model(base / "tiny-rm", seed=3)
    done = {}

    def get(layout: str, placement: str = "auto", dynamic: bool = False):
        key = f"{layout}-{placement}-{dynamic}"
        if key not in done:
            # batch_tokens=1: one forward per completion, so `batches` counts the completions a rank scored
            options = {f"rm:{rm}": {"normalize": True, "batch_tokens": 1, "placement": placement}}
            # with dynamic sampling the RM weighs 0: accuracy ties then drop groups and force refills, while
            # the RM still scores (and normalises, and runs sharded) every completion
            weights = "[1.0,0.0]" if dynamic else "[1.0,1.0]"
            launch(layout, cache_dir, base / key, f"reward.functions=[math_accuracy,rm:{rm}]", f"reward.weights={weights}",
                   f"reward.options={json.dumps(options)}", f"loss.dynamic_sampling={str(dynamic).lower()}")
            done[key] = metrics(base / key)
        return done[key]

    return get


@pytest.mark.parametrize("layout, placement, dynamic", [("ddp", "auto", False), ("zero3", "replicate", False),
                                                       ("zero3", "shard", True)])
def test_two_processes_score_their_share_and_match_one_process(rm_runs, layout, placement, dynamic):
    single, parallel = rm_runs("single", dynamic=dynamic), rm_runs(layout, placement, dynamic)
    for step in range(1, STEPS + 1):
        if not dynamic:  # one reward call per step: 16 completions on one process, 8 on each of two
            assert single[step][f"reward/{NAME}/batches"] == 16 and parallel[step][f"reward/{NAME}/batches"] == 8
        assert parallel[step][f"reward/{NAME}/sharded"] == float(placement == "shard")
        for name in COMPARED:
            assert parallel[step][name] == pytest.approx(single[step][name], rel=1e-4, abs=1e-6), (step, name)
    # normalised over everything so far: the first step's rewards have mean 0 although the raw ones do not
    if not dynamic:
        assert abs(single[1][f"reward/{NAME}/mean"]) < 1e-5 and abs(single[1][f"reward/{NAME}/raw_mean"]) > 1e-3
    else:  # refills happened, so the rank-idle path ran (a refill round scores fewer prompts than the first)
        assert any(single[s]["zero_std_frac"] > 0 for s in single)
